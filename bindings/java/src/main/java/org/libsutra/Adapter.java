package org.libsutra;

/**
 * A LoRA adapter (Hugging Face PEFT) loaded for one model; immutable, shareable by sessions
 * and threads. Sessions it is attached to keep their own reference, so it may be closed while
 * they still use it.
 */
public final class Adapter extends SutraHandle {
    Adapter(long h) {
        super("Adapter", h);
    }

    /**
     * Loads a PEFT adapter for {@code model}: a folder holding adapter_config.json and
     * adapter_model.safetensors, or a .safetensors file with adapter_config.json beside it.
     */
    public static Adapter load(Model model, String path) {
        return new Adapter(Native.adapterLoad(handleOf(model), Native.cstr(path, "path")));
    }

    @Override
    void free(long h) {
        Native.adapterFree(h);
    }
}
