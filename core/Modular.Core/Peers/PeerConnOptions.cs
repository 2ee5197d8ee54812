namespace Modular.Core.Peers;

/// <summary>Timings of the connection procedure; defaults suit real networks, tests shorten them.</summary>
/// <param name="CheckTimeout">How long connectivity checks try before the relay is used.</param>
/// <param name="DirectRecheckInterval">While relayed, how often a direct path is tried again.</param>
/// <param name="HandshakeTimeout">How long after a path was set a first WireGuard handshake may take.</param>
/// <param name="StaleHandshake">A connected peer whose last handshake is older than this is asked for a new one (reconnected when it does not answer).</param>
/// <param name="OfferInterval">How often an unanswered offer is sent again.</param>
/// <param name="Keepalive">WireGuard's persistent keepalive once connected (both sides set it).</param>
/// <param name="SilentPeer">A connected peer from which nothing arrived for this long is asked for a new handshake (see <see cref="SilenceProbe"/>).</param>
/// <param name="SilenceProbeTimeout">How long a silent peer has to answer that handshake before it is reconnected.</param>
public sealed record PeerConnOptions(
    bool ForceRelay = false,
    TimeSpan? CheckTimeout = null,
    TimeSpan? DirectRecheckInterval = null,
    TimeSpan? HandshakeTimeout = null,
    TimeSpan? StaleHandshake = null,
    TimeSpan? OfferInterval = null,
    TimeSpan? Keepalive = null,
    TimeSpan? SilentPeer = null,
    TimeSpan? SilenceProbeTimeout = null)
{
    public TimeSpan Checks => CheckTimeout ?? TimeSpan.FromSeconds(5);

    public TimeSpan Recheck => DirectRecheckInterval ?? TimeSpan.FromSeconds(30);

    public TimeSpan FirstHandshake => HandshakeTimeout ?? TimeSpan.FromSeconds(20);

    // WireGuard renews keys on its own only while it sends: between idle peers whose keepalives come from the
    // responder, the initiator renews on a packet received past 165 s, or the keys expire (REJECT_AFTER_TIME, 180 s)
    // and the next keepalive, up to one interval later, starts a handshake (retried every 5 s). Past that, a live
    // peer would have handshaken: an older handshake makes the loop ask for a new one (a probe), never reconnect by itself.
    public TimeSpan Stale => StaleHandshake ?? TimeSpan.FromSeconds(180) + PersistentKeepalive + TimeSpan.FromSeconds(15);

    public TimeSpan Offers => OfferInterval ?? TimeSpan.FromSeconds(3);

    /// <summary>
    /// The longest wait between two connection attempts of one peer (before ±25 % jitter, <see cref="RetryBackoff"/>).
    /// A relayed peer must carry traffic again within 30 s of its relay's return (issue 17): the worst case is a wait
    /// at its jittered longest (12.5 s) that began just before the relay came back, then an attempt (an offer answered,
    /// the connectivity checks, pairing at the relay), about 10 s more. Management and signal keep their 30 s cap
    /// (<c>AgentEngine.MaxBackoff</c>): P2P tunnels never wait for them.
    /// </summary>
    public static TimeSpan MaxRetryDelay { get; } = TimeSpan.FromSeconds(10);

    /// <summary>How long the side that starts the handshake waits for its peer to bind at the relay too.</summary>
    public static TimeSpan PairingWait { get; } = TimeSpan.FromSeconds(3);

    /// <summary>
    /// How long a relayed peer that switched to a direct path keeps its relayed proxy waiting for proof of the direct
    /// path before it returns to the relay: the switch sends a keepalive on the direct path, which makes the remote's
    /// WireGuard send there too, at the latest with its next keepalive; a first handshake's time on top.
    /// </summary>
    public TimeSpan DirectProof => PersistentKeepalive + FirstHandshake;

    public TimeSpan PersistentKeepalive => Keepalive ?? TimeSpan.FromSeconds(25);

    // A persistent keepalive is due PersistentKeepalive after the last packet EITHER way, so between two idle
    // peers the side whose timer fires first resets the other's with every keepalive: one side may never send.
    // Silence alone therefore proves nothing; after this long without a byte the peer must answer a new
    // handshake (SilenceProbe), which finds a dead peer long before its handshake goes stale (3 min).
    public TimeSpan Silent => SilentPeer ?? (PersistentKeepalive * 3) + TimeSpan.FromSeconds(15);

    // WireGuard retries an unanswered initiation every 5 s: this gives a live peer two to three chances.
    public TimeSpan SilenceProbe => SilenceProbeTimeout ?? TimeSpan.FromSeconds(12);
}
