import SluiceWire

/// RC queue-pair states, with libibverbs' numbering.
public enum QPState: UInt32, CustomStringConvertible, Sendable {
    case reset = 0, initialized = 1, rtr = 2, rts = 3, sqd = 4, sqe = 5, error = 6

    public var description: String {
        switch self {
        case .reset: return "RESET"
        case .initialized: return "INIT"
        case .rtr: return "RTR"
        case .rts: return "RTS"
        case .sqd: return "SQD"
        case .sqe: return "SQE"
        case .error: return "ERR"
        }
    }
}

/// The IB specification's modify-QP table for RC (what ibv_modify_qp checks in
/// the kernel): for each transition, which attributes are required and which
/// are allowed. Anything else in the mask is EINVAL.
public enum QPStateMachine {
    public struct Mask: OptionSet, Sendable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        public static let state = Mask(rawValue: UInt32(SLUICE_QP_STATE))
        public static let curState = Mask(rawValue: UInt32(SLUICE_QP_CUR_STATE))
        public static let accessFlags = Mask(rawValue: UInt32(SLUICE_QP_ACCESS_FLAGS))
        public static let pkeyIndex = Mask(rawValue: UInt32(SLUICE_QP_PKEY_INDEX))
        public static let port = Mask(rawValue: UInt32(SLUICE_QP_PORT))
        public static let av = Mask(rawValue: UInt32(SLUICE_QP_AV))
        public static let pathMTU = Mask(rawValue: UInt32(SLUICE_QP_PATH_MTU))
        public static let timeout = Mask(rawValue: UInt32(SLUICE_QP_TIMEOUT))
        public static let retryCount = Mask(rawValue: UInt32(SLUICE_QP_RETRY_CNT))
        public static let rnrRetry = Mask(rawValue: UInt32(SLUICE_QP_RNR_RETRY))
        public static let rqPSN = Mask(rawValue: UInt32(SLUICE_QP_RQ_PSN))
        public static let maxQPRdAtomic = Mask(rawValue: UInt32(SLUICE_QP_MAX_QP_RD_ATOMIC))
        public static let altPath = Mask(rawValue: UInt32(SLUICE_QP_ALT_PATH))
        public static let minRNRTimer = Mask(rawValue: UInt32(SLUICE_QP_MIN_RNR_TIMER))
        public static let sqPSN = Mask(rawValue: UInt32(SLUICE_QP_SQ_PSN))
        public static let maxDestRdAtomic = Mask(rawValue: UInt32(SLUICE_QP_MAX_DEST_RD_ATOMIC))
        public static let pathMigState = Mask(rawValue: UInt32(SLUICE_QP_PATH_MIG_STATE))
        public static let destQPN = Mask(rawValue: UInt32(SLUICE_QP_DEST_QPN))
    }

    /// Attributes Sluice does not implement even where the table allows them.
    static let unsupported: Mask = [.altPath, .pathMigState]

    static func rule(from: QPState, to: QPState) -> (required: Mask, optional: Mask)? {
        switch (from, to) {
        case (_, .reset), (_, .error):
            return ([.state], [.curState])
        case (.reset, .initialized):
            return ([.state, .pkeyIndex, .port, .accessFlags], [])
        case (.initialized, .initialized):
            return ([.state], [.pkeyIndex, .port, .accessFlags])
        case (.initialized, .rtr):
            return ([.state, .av, .pathMTU, .destQPN, .rqPSN, .maxDestRdAtomic, .minRNRTimer],
                    [.accessFlags, .pkeyIndex, .altPath])
        case (.rtr, .rts):
            return ([.state, .timeout, .retryCount, .rnrRetry, .sqPSN, .maxQPRdAtomic],
                    [.curState, .accessFlags, .minRNRTimer, .altPath, .pathMigState])
        case (.rts, .rts):
            return ([.state], [.curState, .accessFlags, .minRNRTimer, .altPath, .pathMigState])
        default:
            return nil
        }
    }

    /// Checks one ibv_modify_qp call. Returns the new state, or the reason it
    /// is EINVAL.
    public static func check(current: QPState, mask rawMask: UInt32, requested: UInt32) -> Result<QPState, ModifyRefusal> {
        let mask = Mask(rawValue: rawMask)
        var target = current
        if mask.contains(.state) {
            guard let s = QPState(rawValue: requested) else {
                return .failure(ModifyRefusal("qp_state \(requested) is not a QP state"))
            }
            target = s
        }
        // Without IBV_QP_STATE the kernel treats the call as cur -> cur.
        guard let r = rule(from: current, to: target) else {
            return .failure(ModifyRefusal("transition \(current) -> \(target) is not allowed for an RC QP"))
        }
        let effective = mask.union(.state)
        let missing = r.required.subtracting(effective)
        if !missing.isEmpty {
            return .failure(ModifyRefusal("transition \(current) -> \(target) requires attribute mask 0x\(String(missing.rawValue, radix: 16))"))
        }
        let extra = effective.subtracting(r.required).subtracting(r.optional)
        if !extra.isEmpty {
            return .failure(ModifyRefusal("transition \(current) -> \(target) does not accept attribute mask 0x\(String(extra.rawValue, radix: 16))"))
        }
        let unsupportedUsed = effective.intersection(unsupported)
        if !unsupportedUsed.isEmpty {
            return .failure(ModifyRefusal("alternate paths and path migration are not supported"))
        }
        return .success(target)
    }
}

public struct ModifyRefusal: Error, Equatable {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
}
