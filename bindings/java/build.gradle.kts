// The Android library module of the libsutra Java binding (an AAR). Not built on the machine
// that tests libsutra (it has no Android SDK or NDK); tests/java_binding.rs compiles the same
// sources with javac and runs them on the desktop JVM. See README.md in this folder.
//
// Use it from an app's Gradle build: in settings.gradle.kts
//     include(":sutra")
//     project(":sutra").projectDir = file("path/to/libsutra/bindings/java")
// and in the app's dependencies: implementation(project(":sutra")).
// The native libraries must be built first into src/main/jniLibs/<abi>/ (README.md).

plugins {
    id("com.android.library")
}

android {
    namespace = "org.libsutra"
    compileSdk = 35

    defaultConfig {
        minSdk = 24
        // Keeps what the JNI glue looks up by name when an app minifies with R8.
        consumerProguardFiles("consumer-rules.pro")
        ndk {
            abiFilters += listOf("arm64-v8a", "armeabi-v7a", "x86_64")
        }
    }

    compileOptions {
        // The sources are Java 8 (tests/java_binding.rs compiles them with --release 8).
        sourceCompatibility = JavaVersion.VERSION_1_8
        targetCompatibility = JavaVersion.VERSION_1_8
    }

    sourceSets {
        getByName("main") {
            // Prebuilt libsutra.so + libsutra_jni.so per ABI (the default folder, named here).
            jniLibs.srcDirs("src/main/jniLibs")
        }
        getByName("test") {
            // src/test/java/.../BindingTest.java is a plain main() run by `cargo test` on the
            // desktop JVM, not a JUnit test for Gradle.
            java.setSrcDirs(emptyList<String>())
        }
    }
}
