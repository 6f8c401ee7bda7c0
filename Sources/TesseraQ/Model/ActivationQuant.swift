import TQKernels

/// Fake quantization of activations at run time (QuaRot's WxAy): the input of every block linear
/// per token at `bits`, and optionally the keys (after RoPE) and values per head of each token at
/// `kvBits`. The LM head's input stays float, as in QuaRot. Gradients pass straight through
/// (the straight-through estimator): training sees the quantized values, the backward the identity.
public struct ActivationQuantSpec: Sendable, Equatable {
    /// Bits of the linears' inputs; 16 leaves them float.
    public var bits: Int
    public var sym: Bool
    /// The grid spans clipRatio times each token's range (QuaRot: 0.9).
    public var clipRatio: Float
    /// Bits of the KV cache (asymmetric, per head, unclipped as QuaRot's default); 16 leaves it float.
    public var kvBits: Int

    public static let inputBits = [3, 4, 6, 8, 16]
    public static let cacheBits = [4, 8, 16]
    public static let defaultClipRatio: Float = 0.9

    public init(bits: Int, sym: Bool = false, clipRatio: Float = defaultClipRatio, kvBits: Int = 16) {
        self.bits = bits
        self.sym = sym
        self.clipRatio = clipRatio
        self.kvBits = kvBits
    }

    /// Whether anything is quantized.
    public var isActive: Bool { bits < 16 || kvBits < 16 }

    /// Refuses bit widths and ratios outside what is implemented, naming the key as `names` spells it.
    func validate(names: (bits: String, clip: String, kvBits: String)) throws {
        guard Self.inputBits.contains(bits) else {
            throw TQError.invalid("config key \(names.bits): must be one of 3, 4, 6, 8 or 16 (float) (got \(bits))")
        }
        guard clipRatio > 0, clipRatio <= 1 else {
            throw TQError.invalid("config key \(names.clip): must be in (0, 1] (got \(clipRatio))")
        }
        guard Self.cacheBits.contains(kvBits) else {
            throw TQError.invalid("config key \(names.kvBits): must be 4, 8 or 16 (float) (got \(kvBits))")
        }
    }

    /// As config.json's `tesseraq.activations` records it.
    public var json: [String: Any] { ["bits": bits, "sym": sym, "clip_ratio": Double(clipRatio.description)!, "kv_bits": kvBits] }

    /// From config.json's `tesseraq.activations`; every field is required.
    init(checkpoint f: ConfigFields) throws {
        let bits = try f.positiveInt("bits"), kv = try f.positiveInt("kv_bits")
        self.init(bits: bits, sym: try f.flag("sym", default: false), clipRatio: Float(try f.number("clip_ratio")), kvBits: kv)
        do {
            try validate(names: (f.name("bits"), f.name("clip_ratio"), f.name("kv_bits")))
        } catch let e as TQError {
            throw TQError.format("\(f.path): \(e.message)")
        }
    }

    /// x [rows x cols], a linear's input, fake-quantized per token in place.
    func quantizeInput(_ x: UnsafeMutablePointer<Float>, rows: Int, cols: Int) {
        guard bits < 16 else { return }
        tqk_act_fakequant(x, Int64(rows), Int64(cols), Int64(cols), Int32(bits), sym ? 1 : 0, clipRatio)
    }

    /// Keys or values [rows x heads * headDim] fake-quantized per head in place.
    func quantizeCache(_ x: UnsafeMutablePointer<Float>, rows: Int, heads: Int, headDim: Int) {
        guard kvBits < 16 else { return }
        tqk_act_fakequant(x, Int64(rows), Int64(heads * headDim), Int64(headDim), Int32(kvBits), 0, 1)
    }
}

extension Optional where Wrapped == ActivationQuantSpec {
    func quantizeInput(_ x: UnsafeMutablePointer<Float>, rows: Int, cols: Int) {
        self?.quantizeInput(x, rows: rows, cols: cols)
    }

    func quantizeCache(_ x: UnsafeMutablePointer<Float>, rows: Int, heads: Int, headDim: Int) {
        self?.quantizeCache(x, rows: rows, heads: heads, headDim: headDim)
    }
}
