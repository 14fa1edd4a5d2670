package org.libsutra;

import java.nio.charset.StandardCharsets;

/**
 * A libsutra call failed: the {@code sutra_status} code, its name ({@code sutra_status_name})
 * and the message of {@code sutra_last_error()}, which names the file, tensor, shape or
 * argument at fault.
 *
 * <p>Unchecked, so that Kotlin code and {@code use {}} blocks read naturally; every method of
 * this package that calls libsutra may throw it.
 */
public class SutraException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    /** An argument was null, out of range or otherwise unusable. */
    public static final int INVALID_ARGUMENT = 1;
    /** The operating system refused a file operation (missing file, permissions, ...). */
    public static final int IO = 2;
    /** A file or buffer is not what it claims to be. */
    public static final int FORMAT = 3;
    /** A valid file of an architecture, version or dtype libsutra does not support. */
    public static final int UNSUPPORTED = 4;
    /** A caller buffer is too small (the binding sizes its buffers, so rarely seen). */
    public static final int BUFFER_TOO_SMALL = 5;
    /** An allocation failed. */
    public static final int OUT_OF_MEMORY = 6;
    /** A progress callback asked to stop. */
    public static final int CANCELLED = 7;
    /** A bug in libsutra (a caught panic, a broken invariant). */
    public static final int INTERNAL = 8;

    private final int status;
    private final String statusName;
    private final String detail;

    /** Called by the JNI glue: the message arrives as UTF-8 bytes. */
    SutraException(int status, String statusName, byte[] message) {
        this(status, statusName, new String(message, StandardCharsets.UTF_8));
    }

    SutraException(int status, String statusName, String detail) {
        super(statusName + ": " + detail);
        this.status = status;
        this.statusName = statusName;
        this.detail = detail;
    }

    /** An invalid-argument error raised by the Java side of the binding. */
    static SutraException invalidArgument(String detail) {
        return new SutraException(INVALID_ARGUMENT, Native.statusName(INVALID_ARGUMENT), detail);
    }

    /** The numeric {@code sutra_status} (one of the constants of this class). */
    public int getStatus() {
        return status;
    }

    /** The status's name, e.g. {@code "SUTRA_ERR_IO"}. */
    public String getStatusName() {
        return statusName;
    }

    /** libsutra's message alone, without the status name. */
    public String getDetail() {
        return detail;
    }
}
