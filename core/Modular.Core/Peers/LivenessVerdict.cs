namespace Modular.Core.Peers;

/// <summary>What the connect loop does about a peer after one look at it (see <see cref="PeerLiveness.Decide"/>).</summary>
public enum LivenessAction
{
    /// <summary>Nothing to do until the next look.</summary>
    Keep,

    /// <summary>A handshake completed on the chosen path: the peer is Connected.</summary>
    MarkConnected,

    /// <summary>
    /// The connected peer was silent too long, or its handshake is old: ask it for a new handshake (see
    /// <see cref="PeerConnOptions.Silent"/>, <see cref="PeerConnOptions.Stale"/>); <see cref="LivenessVerdict.Reason"/> says which.
    /// </summary>
    Probe,

    /// <summary>The path is dead (<see cref="LivenessVerdict.Reason"/> says why): start a new attempt.</summary>
    Reconnect,

    /// <summary>Relayed long enough: try the direct path again.</summary>
    RecheckDirect,

    /// <summary>The direct path a relayed peer switched to is proven (<see cref="DirectTrial.ProvenBy"/>): close the kept relayed proxy.</summary>
    ReleaseRelay,

    /// <summary>
    /// The direct path was not proven within <see cref="PeerConnOptions.DirectProof"/> (<see cref="LivenessVerdict.Reason"/>
    /// says so): set WireGuard back to the kept relayed proxy.
    /// </summary>
    ReturnToRelay,
}

/// <summary>One verdict of <see cref="PeerLiveness.Decide"/>.</summary>
/// <param name="Next">The watch state once the action is done (the loop keeps it for the next look).</param>
/// <param name="Reason">Why, for <see cref="LivenessAction.Reconnect"/> (shown in status) and <see cref="LivenessAction.Probe"/> (logged); null otherwise.</param>
public readonly record struct LivenessVerdict(LivenessAction Action, LivenessState Next, string? Reason = null);
