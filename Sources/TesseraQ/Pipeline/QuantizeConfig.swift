import Foundation

/// The JSON configuration of `tq_quantize`: common keys plus the method's own. Unknown keys,
/// wrong types and out-of-range values are rejected with a message naming the key.
public struct QuantizeConfig: Sendable {
    public var method: String
    public var spec: QuantSpec
    /// "gptq_v2" (default) or "gptq" (v1: zero points stored minus one).
    public var format: String
    /// Replace an existing output directory.
    public var overwrite: Bool
    /// The method's own keys, already type-checked against its `MethodKeys`.
    public var options: [String: JSONValue]
    /// Fake quantization of activations while calibrating and in the checkpoint (`a_bits`, `a_sym`,
    /// `a_clip_ratio`, `kv_bits`); nil when both stay float.
    public var activations: ActivationQuantSpec?
    /// QuaRot's rotations before quantizing (`rotate`: "hadamard"), seeded by `rotate_seed`; nil: none.
    public var rotationSeed: UInt64?
    /// What `fit(to:)` chose for the model instead of a preset's value, one sentence each
    /// (printed by the CLI, recorded in quantize_report.json).
    public private(set) var notices: [String] = []

    public static let methods = ["rtn", "tesseraq", "gptq", "awq", "lwc"]
    static let commonKeys = ["method", "bits", "group_size", "sym", "format", "overwrite"] + activationKeys
    static let activationKeys = ["a_bits", "a_sym", "a_clip_ratio", "kv_bits", "rotate", "rotate_seed"]

    public init(method: String, spec: QuantSpec, format: String = "gptq_v2", overwrite: Bool = false,
                options: [String: JSONValue] = [:]) {
        self.method = method
        self.spec = spec
        self.format = format
        self.overwrite = overwrite
        self.options = options
    }

    public static func parse(_ text: String) throws -> QuantizeConfig {
        let json = try JSONValue.parse(Data(text.utf8), what: "quantization config")
        guard let obj = json.object else { throw TQError.invalid("quantization config: not a JSON object") }
        let r = KeyReader(obj)
        let method = try r.string("method", default: "rtn")
        guard methods.contains(method) else {
            throw TQError.invalid("config key method: unknown method \"\(method)\" (available: \(methods.joined(separator: ", ")))")
        }
        let bits = try r.int("bits", default: 4)
        guard GPTQConfig.supportedBits.contains(bits) else { throw TQError.invalid("config key bits: must be 2, 3, 4 or 8 (got \(bits))") }
        let group = try r.int("group_size", default: 128)
        guard group == -1 || group >= 1 else { throw TQError.invalid("config key group_size: must be -1 (per-channel) or positive (got \(group))") }
        let sym = try r.bool("sym", default: false)
        let format = try r.string("format", default: "gptq_v2")
        guard format == "gptq_v2" || format == "gptq" else {
            throw TQError.invalid("config key format: must be \"gptq_v2\" or \"gptq\" (got \"\(format)\")")
        }
        let overwrite = try r.bool("overwrite", default: false)
        let allowed = Set(commonKeys + MethodKeys.keys(for: method))
        if let unknown = obj.keys.sorted().first(where: { !allowed.contains($0) }) {
            throw TQError.invalid("config key \(unknown): unknown for method \(method)")
        }
        var options = obj
        for k in commonKeys { options[k] = nil }
        try MethodKeys.validate(options, method: method)
        var config = QuantizeConfig(method: method, spec: QuantSpec(bits: bits, groupSize: group, sym: sym), format: format,
                                    overwrite: overwrite, options: options)
        (config.activations, config.rotationSeed) = try activationSettings(r)
        return config
    }

    /// `a_bits` (16: float), `a_sym`, `a_clip_ratio`, `kv_bits` (16: float), `rotate` ("none",
    /// "hadamard") and `rotate_seed`; a key that would do nothing in the combination given is refused.
    static func activationSettings(_ r: KeyReader) throws -> (ActivationQuantSpec?, UInt64?) {
        let spec = ActivationQuantSpec(bits: try r.int("a_bits", default: 16), sym: try r.bool("a_sym", default: false),
                                       clipRatio: Float(try r.double("a_clip_ratio", default: Double(ActivationQuantSpec.defaultClipRatio))),
                                       kvBits: try r.int("kv_bits", default: 16))
        try spec.validate(names: ("a_bits", "a_clip_ratio", "kv_bits"))
        if spec.bits == 16, let key = ["a_sym", "a_clip_ratio"].first(where: { r.obj[$0] != nil }) {
            throw TQError.invalid("config key \(key): applies to quantized activations only (set a_bits to 3, 4, 6 or 8)")
        }
        let rotate = try r.string("rotate", default: "none")
        guard rotate == "none" || rotate == "hadamard" else {
            throw TQError.invalid("config key rotate: must be \"none\" or \"hadamard\" (got \"\(rotate)\")")
        }
        let seed = try r.int("rotate_seed", default: 0)
        guard seed >= 0 else { throw TQError.invalid("config key rotate_seed: must be >= 0") }
        if rotate == "none", r.obj["rotate_seed"] != nil {
            throw TQError.invalid("config key rotate_seed: applies only with \"rotate\": \"hadamard\"")
        }
        return (spec.isActive ? spec : nil, rotate == "hadamard" ? UInt64(seed) : nil)
    }

    /// The keys above as the run report and the resume fingerprint record them.
    var activationJSON: [String: Any] {
        var j: [String: Any] = ["rotate": rotationSeed == nil ? "none" : "hadamard"]
        if let rotationSeed { j["rotate_seed"] = Int(rotationSeed) }
        if let activations { j["activations"] = activations.json }
        return j
    }
}

extension QuantizeConfig {
    /// Fits what the configuration left to its preset to `model`: a calibrated method whose
    /// preset windows are longer than the model's context calibrates on windows of the context
    /// length. An explicit `seq_len` is kept (and refused later if too long). Idempotent.
    public mutating func fit(to model: LlamaConfig) throws {
        guard method != "rtn", options["seq_len"] == nil else { return }
        let preset = try makeBlockQuantizer(self).calibration.seqLen
        guard preset > model.maxPositions else { return }
        options["seq_len"] = .int(model.maxPositions)
        notices.append("seq_len: the preset's \(preset) exceeds the model's context (max_position_embeddings "
                       + "\(model.maxPositions)); calibrating on windows of \(model.maxPositions) tokens")
    }

    /// The peak memory a calibrated run of this configuration will need, before it starts.
    public static func memoryEstimate(_ config: QuantizeConfig, model: LlamaModel) throws -> MemoryEstimate {
        MemoryEstimate(config: model.config, method: try makeBlockQuantizer(config), spec: config.spec)
    }
}

/// Typed access to a JSON object's keys with messages that name the key.
struct KeyReader {
    let obj: [String: JSONValue]
    /// Put before every key read, so one settings type serves under a method's namespace
    /// (TesseraQ reads AWQSettings as `awq_n_grid`, `awq_scale_tokens`, ...).
    let prefix: String
    init(_ obj: [String: JSONValue], prefix: String = "") { self.obj = obj; self.prefix = prefix }

    /// The key as the configuration spells it, for lookups and messages.
    func name(_ key: String) -> String { prefix + key }

    func int(_ key: String, default def: Int) throws -> Int {
        guard let v = obj[name(key)] else { return def }
        guard case .int(let i) = v else { throw TQError.invalid("config key \(name(key)): expected an integer") }
        return i
    }

    func double(_ key: String, default def: Double) throws -> Double {
        guard let v = obj[name(key)] else { return def }
        guard let d = v.double, d.isFinite else { throw TQError.invalid("config key \(name(key)): expected a number") }
        return d
    }

    func bool(_ key: String, default def: Bool) throws -> Bool {
        guard let v = obj[name(key)] else { return def }
        guard let b = v.bool else { throw TQError.invalid("config key \(name(key)): expected true or false") }
        return b
    }

    func string(_ key: String, default def: String) throws -> String {
        guard let v = obj[name(key)] else { return def }
        guard let s = v.string else { throw TQError.invalid("config key \(name(key)): expected a string") }
        return s
    }
}

/// Each method's own configuration keys (none for RTN).
enum MethodKeys {
    static func keys(for method: String) -> [String] {
        switch method {
        case "tesseraq": TesseraQOptions.keys
        case "awq": AWQOptions.keys
        case "gptq": GPTQOptions.keys
        case "lwc": LWCOptions.keys
        default: []
        }
    }

    static func validate(_ options: [String: JSONValue], method: String) throws {
        if method == "tesseraq" { _ = try TesseraQOptions(options: options) }
        if method == "awq" { _ = try AWQOptions(options: options) }
        if method == "gptq" { _ = try GPTQOptions(options: options) }
        if method == "lwc" { _ = try LWCOptions(options: options) }
        if let c = options["calib_tokens"], c.string == nil { throw TQError.invalid("config key calib_tokens: expected a file path string") }
    }
}
