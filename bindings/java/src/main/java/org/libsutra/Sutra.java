package org.libsutra;

/** Library-wide information. */
public final class Sutra {
    private Sutra() {}

    /** libsutra's version (the crate's semver), e.g. {@code "0.1.0"}. */
    public static String version() {
        return Native.version();
    }

    /** One line naming the CPU features found and the kernel path chosen. */
    public static String systemInfo() {
        return Native.systemInfo();
    }

    /** The name of a status code ({@code "SUTRA_ERR_FORMAT"}, ...). */
    public static String statusName(int status) {
        return Native.statusName(status);
    }
}
