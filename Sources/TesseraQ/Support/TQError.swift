/// Every failure the core reports. `status` is the C-ABI code (see README, "Status codes").
public struct TQError: Error, CustomStringConvertible, Equatable {
    public enum Kind: Int32, Sendable {
        case invalidArgument = -1
        case io = -2
        case format = -3
        case unsupported = -4
        case outOfMemory = -5
        case cancelled = -6
        case numeric = -7
        case cpu = -8
        case `internal` = -9
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
