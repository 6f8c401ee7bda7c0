/// tokenizer.json `post_processor`s, for single sequences (what `encode(text)` uses).
indirect enum TextPostProcessor {
    case sequence([TextPostProcessor])
    /// Ids to put before and after the sequence.
    case wrap(before: [UInt32], after: [UInt32])
    case none

    static func parse(_ j: TokJSON, path: String = "post_processor") throws -> TextPostProcessor {
        guard let type = j["type"]?.string else { throw TQError(.format, "tokenizer.json: \(path) has no \"type\"") }
        func pair(_ key: String) throws -> UInt32 {
            guard let a = j[key]?.array, a.count == 2, a[0].bytes != nil, let id = a[1].int, id >= 0 else {
                throw TQError(.format, "tokenizer.json: \(path) (\(type)).\(key) must be [token, id]")
            }
            return UInt32(id)
        }
        switch type {
        case "Sequence":
            guard let items = j["processors"]?.array else {
                throw TQError(.format, "tokenizer.json: \(path) (Sequence).processors must be an array")
            }
            return .sequence(try items.enumerated().map { try parse($0.element, path: "\(path).processors[\($0.offset)]") })
        case "ByteLevel":
            return .none  // only trims offsets
        case "RobertaProcessing", "BertProcessing":
            return .wrap(before: [try pair("cls")], after: [try pair("sep")])
        case "TemplateProcessing":
            guard let single = j["single"]?.array else {
                throw TQError(.format, "tokenizer.json: \(path) (TemplateProcessing).single must be an array")
            }
            var special: [[UInt8]: [UInt32]] = [:]
            if let st = j["special_tokens"]?.members {
                for (k, v) in st {
                    guard let ids = v["ids"]?.array else {
                        throw TQError(.format, "tokenizer.json: \(path) (TemplateProcessing).special_tokens entry has no ids")
                    }
                    special[k] = try ids.map { x -> UInt32 in
                        guard let i = x.int, i >= 0 else {
                            throw TQError(.format, "tokenizer.json: \(path) (TemplateProcessing) special token ids must be non-negative integers")
                        }
                        return UInt32(i)
                    }
                }
            }
            var before: [UInt32] = [], after: [UInt32] = []
            var seenA = false
            for item in single {
                if let s = item["SpecialToken"] {
                    guard let id = s["id"]?.bytes, let ids = special[id] else {
                        throw TQError(.format, "tokenizer.json: \(path) (TemplateProcessing) uses special token \"\(s["id"]?.string ?? "?")\", missing from special_tokens")
                    }
                    if seenA { after += ids } else { before += ids }
                } else if let s = item["Sequence"] {
                    guard s["id"]?.string == "A", !seenA else {
                        throw TQError(.unsupported, "tokenizer.json: \(path) (TemplateProcessing): a single-sequence template must use sequence A once")
                    }
                    seenA = true
                } else {
                    throw TQError(.format, "tokenizer.json: \(path) (TemplateProcessing) template items must be SpecialToken or Sequence")
                }
            }
            guard seenA else { throw TQError(.format, "tokenizer.json: \(path) (TemplateProcessing): the single template has no sequence") }
            return .wrap(before: before, after: after)
        default:
            throw TQError(.unsupported, "tokenizer.json: the \(type) post-processor (\(path)) is not supported "
                          + "(supported: TemplateProcessing, ByteLevel, RobertaProcessing, BertProcessing, Sequence)")
        }
    }

    func apply(_ ids: [UInt32]) -> [UInt32] {
        switch self {
        case .sequence(let ps):
            var x = ids
            for p in ps { x = p.apply(x) }
            return x
        case .wrap(let before, let after):
            return before + ids + after
        case .none:
            return ids
        }
    }
}
