//! Packed checkpoints: read GPTQ low-bit tensors, multiply on the packed words
//! A tq_packed holds the packed linears of a GPTQ checkpoint, read-only once open. Thread safety:
//! every function may run concurrently on one tq_packed (engines share one checkpoint between
//! threads), tq_packed_free included: calls already running when it is freed finish normally,
//! later ones fail with TQ_ERR_INVALID_ARGUMENT. Names from tq_packed_info die with the handle.
#if canImport(Glibc)
import Glibc
#endif
import TesseraQ

/// A packed checkpoint plus the C strings tq_packed_info hands out.
final class PackedHandle: HandleObject {
    static let handleKind = HandleKind.packed

    let checkpoint: PackedCheckpoint
    let names: [UnsafeMutablePointer<CChar>]

    init(_ checkpoint: PackedCheckpoint) {
        self.checkpoint = checkpoint
        names = checkpoint.linears.map { strdup($0.name) }
    }

    deinit { names.forEach { free($0) } }

    func linear(_ index: Int64) throws -> PackedLinear {
        guard index >= 0, index < checkpoint.linears.count else {
            throw invalid("index \(index) is out of range (the checkpoint has \(checkpoint.linears.count) packed tensors)")
        }
        return checkpoint.linears[Int(index)]
    }
}

/// Opens the packed tensors of a GPTQ checkpoint directory; free with tq_packed_free.
@c public func tq_packed_open(_ path: UnsafePointer<CChar>?, _ ckpt: UnsafeMutablePointer<TQPackedHandle?>?) -> Int32 {
    openHandle(path, ckpt, "ckpt") { PackedHandle(try PackedCheckpoint(directory: $0)) }
}

/// Frees a packed checkpoint handle; NULL is accepted.
@c public func tq_packed_free(_ ckpt: TQPackedHandle?) {
    releaseHandle(ckpt, as: PackedHandle.self)
}

/// The number of packed tensors (linear layers).
@c public func tq_packed_count(_ ckpt: TQPackedHandle?, _ count: UnsafeMutablePointer<Int64>?) -> Int32 {
    guarded {
        let h = try borrowHandle(ckpt, "ckpt", as: PackedHandle.self)
        try required(count, "count").pointee = Int64(h.checkpoint.linears.count)
    }
}

/// Tensor i: module name (valid while the handle lives), out/in features, bits, group size
/// (-1 per-channel) and symmetry. Any out-pointer may be NULL.
@c public func tq_packed_info(_ ckpt: TQPackedHandle?, _ index: Int64, _ name: UnsafeMutablePointer<UnsafePointer<CChar>?>?,
                              _ out_features: UnsafeMutablePointer<Int64>?, _ in_features: UnsafeMutablePointer<Int64>?,
                              _ bits: UnsafeMutablePointer<Int32>?, _ group_size: UnsafeMutablePointer<Int64>?,
                              _ sym: UnsafeMutablePointer<Int32>?) -> Int32 {
    guarded {
        let h = try borrowHandle(ckpt, "ckpt", as: PackedHandle.self)
        let l = try h.linear(index)
        name?.pointee = UnsafePointer(h.names[Int(index)])
        out_features?.pointee = Int64(l.out)
        in_features?.pointee = Int64(l.inFeatures)
        bits?.pointee = Int32(l.bits)
        group_size?.pointee = Int64(l.groupSize)
        sym?.pointee = l.sym ? 1 : 0
    }
}

/// Integer codes of tensor i, out x in bytes (row o holds W's row o).
@c public func tq_packed_unpack(_ ckpt: TQPackedHandle?, _ index: Int64, _ codes: UnsafeMutablePointer<UInt8>?) -> Int32 {
    guarded {
        let l = try borrowHandle(ckpt, "ckpt", as: PackedHandle.self).linear(index)
        l.unpack(into: try required(codes, "codes"))
    }
}

/// Rows [row_begin, row_end) of tensor i's weight, dequantised: (row_end - row_begin) x in floats.
@c public func tq_packed_dequantize(_ ckpt: TQPackedHandle?, _ index: Int64, _ row_begin: Int64, _ row_end: Int64,
                                    _ out: UnsafeMutablePointer<Float>?) -> Int32 {
    guarded {
        let l = try borrowHandle(ckpt, "ckpt", as: PackedHandle.self).linear(index)
        guard row_begin >= 0, row_begin <= row_end, row_end <= l.out else {
            throw invalid("rows [\(row_begin), \(row_end)) are not within [0, \(l.out)]")
        }
        l.dequantize(rows: Int(row_begin)..<Int(row_end), into: try required(out, "out"))
    }
}

/// y[out] = W x[in] on the packed words.
@c public func tq_packed_gemv(_ ckpt: TQPackedHandle?, _ index: Int64, _ x: UnsafePointer<Float>?,
                              _ y: UnsafeMutablePointer<Float>?) -> Int32 {
    guarded {
        let l = try borrowHandle(ckpt, "ckpt", as: PackedHandle.self).linear(index)
        l.gemv(try required(x, "x"), try required(y, "y"))
    }
}

/// ys[k][out] = W x[in] with W tensor indices[k], for count tensors sharing in_features (a block's
/// q/k/v or gate/up): one parallel region for all of them, so small tensors do not each pay for
/// starting the threads.
@c public func tq_packed_gemv_many(_ ckpt: TQPackedHandle?, _ indices: UnsafePointer<Int64>?, _ count: Int64,
                                   _ x: UnsafePointer<Float>?, _ ys: UnsafePointer<UnsafeMutablePointer<Float>?>?) -> Int32 {
    guarded {
        let h = try borrowHandle(ckpt, "ckpt", as: PackedHandle.self)
        guard count > 0 else { throw invalid("count must be positive (got \(count))") }
        let idx = try required(indices, "indices"), yp = try required(ys, "ys")
        let layers = try (0..<Int(count)).map { try h.linear(idx[$0]) }
        let outs = try (0..<Int(count)).map { k in
            guard let y = yp[k] else { throw invalid("ys[\(k)] is NULL") }
            return y
        }
        if let k = layers.firstIndex(where: { $0.inFeatures != layers[0].inFeatures }) {
            throw invalid("tensors \(idx[0]) and \(idx[k]) have different in_features (\(layers[0].inFeatures), "
                          + "\(layers[k].inFeatures)): they cannot share x")
        }
        PackedLinear.gemvMany(layers, try required(x, "x"), outs)
    }
}

/// Y[batch x out] = X[batch x in] W^T on the packed words.
@c public func tq_packed_gemm(_ ckpt: TQPackedHandle?, _ index: Int64, _ X: UnsafePointer<Float>?, _ batch: Int64,
                              _ Y: UnsafeMutablePointer<Float>?) -> Int32 {
    guarded {
        let l = try borrowHandle(ckpt, "ckpt", as: PackedHandle.self).linear(index)
        guard batch > 0 else { throw invalid("batch must be positive (got \(batch))") }
        l.gemm(try required(X, "X"), batch: Int(batch), try required(Y, "Y"))
    }
}
