// swift-tools-version:5.9
// The Swift binding of libsutra (bindings/swift): `import Sutra` for Model, Session, Tokenizer,
// Sampler, Adapter and Trainer; `import CSutra` for the C API itself. At the repository root so
// that the package can be depended on by URL and the module map reaches include/sutra.h
// inside the package. The library is linked as -lsutra: build it with cargo first and pass
// its folder, e.g. `swift build -Xlinker -L$PWD/target/release`.
import PackageDescription

let package = Package(
    name: "Sutra",
    platforms: [.macOS(.v12), .iOS(.v15)],
    products: [
        .library(name: "Sutra", targets: ["Sutra"]),
    ],
    targets: [
        .systemLibrary(name: "CSutra", path: "bindings/swift/CSutra"),
        .target(name: "Sutra", dependencies: ["CSutra"], path: "bindings/swift/Sources/Sutra"),
    ]
)
