/// Phi-3 stores q, k, v as one `qkv_proj` and gate, up as one `gate_up_proj`, their rows
/// stacked in that order. The library works on the seven linears; these tables map them to the
/// checkpoint's tensors and back (a fused linear's rows are quantized exactly as its parts':
/// grids are per output row, and the parts share their input).
public enum FusedLinear: CaseIterable, Sendable {
    case qkv, gateUp

    /// Module path inside `model.layers.N.`.
    public var module: String {
        switch self {
        case .qkv: "self_attn.qkv_proj"
        case .gateUp: "mlp.gate_up_proj"
        }
    }

    /// The linears whose rows it stacks, in order.
    public var parts: [LinearKind] {
        switch self {
        case .qkv: [.q, .k, .v]
        case .gateUp: [.gate, .up]
        }
    }

    public func prefix(layer: Int) -> String { "model.layers.\(layer).\(module)" }

    static func containing(_ kind: LinearKind) -> FusedLinear? {
        allCases.first { $0.parts.contains(kind) }
    }
}

extension LinearKind {
    /// Where this linear's rows are in the checkpoint: tensor prefix, first row, and the tensor's
    /// row count (its own, or the fused tensor's when the model fuses it).
    public func storage(layer: Int, config c: LlamaConfig) -> (prefix: String, offset: Int, rows: Int) {
        guard c.fusedLinears, let fused = FusedLinear.containing(self) else { return (prefix(layer: layer), 0, shape(c).out) }
        let before = fused.parts.prefix { $0 != self }.reduce(0) { $0 + $1.shape(c).out }
        return (fused.prefix(layer: layer), before, fused.parts.reduce(0) { $0 + $1.shape(c).out })
    }
}

extension PackedLinear {
    /// The packed linear whose rows are those of `parts` in order (same input, grid settings and
    /// g_idx), named `name`: qweight and scales are concatenated along the output columns, the
    /// zero points unpacked, concatenated and packed again.
    static func stacking(_ parts: [PackedLinear], name: String) throws -> PackedLinear {
        let first = parts[0]
        guard parts.allSatisfy({ $0.inFeatures == first.inFeatures && $0.bits == first.bits && $0.groupSize == first.groupSize
                                 && $0.sym == first.sym && $0.gIdx == first.gIdx }) else {
            throw TQError(.internal, "\(name): the parts differ in input size, grid or g_idx and cannot be fused")
        }
        func stackColumns<T>(_ rows: Int, _ field: (PackedLinear) -> [T]) -> [T] {
            var out: [T] = []
            out.reserveCapacity(rows * parts.reduce(0) { $0 + $1.out })
            for r in 0..<rows { for p in parts { out += field(p)[(r * p.out)..<((r + 1) * p.out)] } }
            return out
        }
        let out = parts.reduce(0) { $0 + $1.out }
        let zeros: [UInt8] = stackColumns(first.nGroups) { $0.unpackZeros() }
        return PackedLinear(name: name, out: out, inFeatures: first.inFeatures, bits: first.bits, groupSize: first.groupSize,
                            sym: first.sym, qweight: stackColumns(first.qweight.count / first.out) { $0.qweight },
                            qzeros: packZeros(zeros, nGroups: first.nGroups, out: out, bits: first.bits),
                            scales: stackColumns(first.nGroups) { $0.scales }, gIdx: first.gIdx)
    }

    /// `linears` as the checkpoint stores them: for a model with fused linears, every fused
    /// group's parts replaced by one stacked linear.
    static func asStored(_ linears: [PackedLinear], config c: LlamaConfig) throws -> [PackedLinear] {
        guard c.fusedLinears else { return linears }
        var byName = Dictionary(uniqueKeysWithValues: linears.map { ($0.name, $0) })
        var stored: [PackedLinear] = []
        for layer in 0..<c.layers {
            for fused in FusedLinear.allCases {
                let names = fused.parts.map { $0.prefix(layer: layer) }
                let parts = names.compactMap { byName[$0] }
                guard parts.count == names.count else { continue }
                stored.append(try stacking(parts, name: fused.prefix(layer: layer)))
                for n in names { byName[n] = nil }
            }
        }
        return stored + linears.filter { byName[$0.name] != nil }
    }
}
