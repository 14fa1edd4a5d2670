// libsutra from Swift: thin classes over the C API of include/sutra.h (module CSutra).
//
// Threading follows the C contract (docs/c-api.md): a Model, a Tokenizer and an Adapter are
// immutable and may be shared by threads, so they are Sendable; a Session, a Sampler and a
// Trainer are used by one thread at a time, so they are not. Every failing call throws a
// SutraError carrying the status and sutra_last_error()'s message.

import CSutra
import Foundation

/// A libsutra call returned a status other than SUTRA_OK.
public struct SutraError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The numeric `sutra_status` (SUTRA_ERR_IO is 2, ...).
    public let status: Int32
    /// Its name, e.g. "SUTRA_ERR_FORMAT".
    public let statusName: String
    /// `sutra_last_error()`: names the file, tensor or argument at fault.
    public let message: String

    public var description: String { "\(statusName): \(message)" }

    /// Reads the message of the call that just failed, on this thread.
    init(_ status: sutra_status) {
        // The message first: it is valid only until this thread's next sutra_ call.
        self.message = String(cString: sutra_last_error())
        let code = Int32(truncatingIfNeeded: status.rawValue)
        self.status = code
        self.statusName = String(cString: sutra_status_name(code))
    }

    /// An argument refused on the Swift side, before any C call.
    init(invalidArgument message: String) {
        let code = Int32(truncatingIfNeeded: SUTRA_ERR_INVALID_ARGUMENT.rawValue)
        self.status = code
        self.statusName = String(cString: sutra_status_name(code))
        self.message = message
    }
}

/// Throws the SutraError of `status` unless it is SUTRA_OK.
@inline(__always)
func check(_ status: sutra_status) throws {
    if status != SUTRA_OK {
        throw SutraError(status)
    }
}

/// The library itself.
public enum Library {
    /// The crate's semver (`sutra_version`).
    public static var version: String { String(cString: sutra_version()) }
    /// The CPU features found and the kernel path chosen (`sutra_system_info`).
    public static var systemInfo: String { String(cString: sutra_system_info()) }
}

/// A value moved to another thread that the caller promises not to touch meanwhile.
struct UncheckedSendable<T>: @unchecked Sendable {
    let value: T
}

/// A flag set from any thread (the stream's termination) and read by the generation.
final class StopFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var stopped = false

    func stop() {
        lock.lock()
        stopped = true
        lock.unlock()
    }

    var isStopped: Bool {
        lock.lock()
        defer { lock.unlock() }
        return stopped
    }
}
