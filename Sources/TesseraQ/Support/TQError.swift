/// Every failure the core reports. `status` is the C-ABI code: this enum is the one definition
/// of the status codes; scripts/gen_header.py writes the header's `tq_status` from it (names
/// and comments), and tests check README's table and the Python exceptions against the header.
public struct TQError: Error, CustomStringConvertible, Equatable {
    public enum Kind: Int32, Sendable, CaseIterable {
        /// A NULL pointer, a value out of range, a bad configuration key, a wrong or freed handle.
        case invalidArgument = -1
        /// A file or directory missing, unreadable or unwritable.
        case io = -2
        /// Malformed or inconsistent file contents (JSON, safetensors header, shapes, packed tensors).
        case format = -3
        /// A valid but unsupported dtype, architecture, bit width or component.
        case unsupported = -4
        /// The run cannot fit in available memory, or an allocation failed.
        case outOfMemory = -5
        /// The progress callback asked to stop.
        case cancelled = -6
        /// A NaN or infinite value (weights, loss).
        case numeric = -7
        /// The CPU lacks AVX2/FMA/F16C.
        case cpu = -8
        /// Anything else (a bug: please report).
        case `internal` = -9

        /// The code's name in the C header.
        public var cName: String {
            switch self {
            case .invalidArgument: "TQ_ERR_INVALID_ARGUMENT"
            case .io: "TQ_ERR_IO"
            case .format: "TQ_ERR_FORMAT"
            case .unsupported: "TQ_ERR_UNSUPPORTED"
            case .outOfMemory: "TQ_ERR_OUT_OF_MEMORY"
            case .cancelled: "TQ_ERR_CANCELLED"
            case .numeric: "TQ_ERR_NUMERIC"
            case .cpu: "TQ_ERR_CPU"
            case .internal: "TQ_ERR_INTERNAL"
            }
        }
    }

    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var status: Int32 { kind.rawValue }
    public var description: String { message }

    static func invalid(_ m: String) -> TQError { TQError(.invalidArgument, m) }
    static func format(_ m: String) -> TQError { TQError(.format, m) }
    static func io(_ m: String) -> TQError { TQError(.io, m) }
    static func unsupported(_ m: String) -> TQError { TQError(.unsupported, m) }
}
