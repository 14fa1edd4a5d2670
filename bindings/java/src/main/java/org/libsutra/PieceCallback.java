package org.libsutra;

/**
 * Receives each generated piece of text (whole characters; stop strings are never passed).
 * Return false to stop. An exception thrown here stops generation and propagates out of
 * {@link Generation#generate}. Kotlin: {@code { piece -> print(piece); true }}.
 */
@FunctionalInterface
public interface PieceCallback {
    /** Called with the next piece of text; return false to stop generating. */
    boolean onPiece(String piece);
}
