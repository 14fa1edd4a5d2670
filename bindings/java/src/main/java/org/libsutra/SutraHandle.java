package org.libsutra;

/**
 * A libsutra handle owned by a Java object. {@link #close()} frees it and may be called any
 * number of times; any other use after close throws {@link IllegalStateException}.
 *
 * <p>Like the C handles, an object is used by one thread at a time (a {@link Model},
 * {@link Tokenizer} and {@link Adapter} may be shared by threads for reading); it must not be
 * closed while another thread uses it. Closing is explicit (try-with-resources, Kotlin's
 * {@code use}): there is no finalizer.
 */
public abstract class SutraHandle implements AutoCloseable {
    private final String kind;
    private volatile long handle;
    private int busy;

    SutraHandle(String kind, long handle) {
        this.kind = kind;
        this.handle = handle;
    }

    /** The live handle; throws when closed or when a running generate holds this object. */
    final long handle() {
        long h = handle;
        if (h == 0) {
            throw new IllegalStateException(kind + " is closed");
        }
        if (busy > 0) {
            throw new IllegalStateException(kind + " is in use by a running generate");
        }
        return h;
    }

    /** The handle of an argument, 0 (NULL: libsutra names the argument) when it is null. */
    static long handleOf(SutraHandle h) {
        return h == null ? 0 : h.handle();
    }

    /** Marks the object busy (so that a generate callback cannot use or close it). */
    final long enter() {
        long h = handle();
        busy++;
        return h;
    }

    final void exit() {
        busy--;
    }

    /** Whether {@link #close()} was called. */
    public final boolean isClosed() {
        return handle == 0;
    }

    /** Frees the native object; idempotent. */
    @Override
    public final synchronized void close() {
        if (busy > 0) {
            throw new IllegalStateException(kind + " cannot be closed while a generate uses it");
        }
        long h = handle;
        if (h != 0) {
            handle = 0;
            free(h);
        }
    }

    abstract void free(long h);
}
