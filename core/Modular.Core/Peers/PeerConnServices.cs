using System.Net;
using Modular.Abstractions.Proxy;
using Modular.Abstractions.WireGuard;
using Modular.Control.Signal;
using Modular.Core.Ice;

namespace Modular.Core.Peers;

/// <summary>What the connection manager knows about one remote peer from the network map.</summary>
/// <param name="Ip">The peer's overlay address (first allowed IP, without prefix).</param>
public sealed record RemotePeerInfo(WgKey PublicKey, string Name, string Ip, IReadOnlyList<IPNetwork> AllowedIps, WgKey? PresharedKey)
{
    /// <summary>Equal in every field (records compare lists by reference, a map carries new lists every time).</summary>
    public bool SameAs(RemotePeerInfo other)
        => SameWireGuardConfig(other) && string.Equals(Name, other.Name, StringComparison.Ordinal) && string.Equals(Ip, other.Ip, StringComparison.Ordinal);

    public bool SameWireGuardConfig(RemotePeerInfo other)
        => PublicKey == other.PublicKey && Nullable.Equals(PresharedKey, other.PresharedKey)
           && AllowedIps.Count == other.AllowedIps.Count && AllowedIps.Zip(other.AllowedIps).All(p => p.First.Equals(p.Second));
}

/// <summary>Sends end-to-end sealed signal bodies to a peer; throws when signal is down.</summary>
public interface IPeerSignaling
{
    Task SendAsync(WgKey recipient, SignalBody body, CancellationToken cancellationToken);
}

/// <summary>The ICE layer as a peer connection uses it (an <see cref="IceAgent"/>, or a test double).</summary>
public interface IPeerPaths
{
    /// <summary>This machine's current candidates (host and server-reflexive), as sent in offers.</summary>
    IReadOnlyList<IceCandidate> LocalCandidates { get; }

    /// <summary>Answers checks for <paramref name="local"/>; see <see cref="IceAgent.Register"/>.</summary>
    IDisposable Register(IceCredentials local, Action<IPEndPoint, string> onValidCheck);

    Task<CheckResult?> CheckAsync(IPEndPoint remote, IceCredentials local, IceCredentials remoteCredentials, TimeSpan timeout, TimeSpan interval, CancellationToken cancellationToken);

    /// <summary>The WireGuard endpoint for a remote candidate that passed checks (identity when checks run on WireGuard's port).</summary>
    IPEndPoint WireGuardEndpointFor(IPEndPoint checkedRemote);
}

/// <summary>A relayed path to one peer joined to WireGuard through a proxy.</summary>
/// <param name="IsPaired">True once the peer has bound at the relay too (before that the relay drops what we send); null: unknown.</param>
public sealed record RelayedPath(IProxy Proxy, string RelayAddress, Func<bool>? IsPaired = null);

/// <summary>Opens the relay path for one peer: relay binding plus a proxy of the selected kind.</summary>
public interface IRelayConnector
{
    /// <summary>Throws with a message fit for status when there is no relay or it refuses.</summary>
    Task<RelayedPath> ConnectAsync(WgKey remotePeer, CancellationToken cancellationToken);
}

/// <summary>Timings of the connection procedure; defaults suit real networks, tests shorten them.</summary>
/// <param name="CheckTimeout">How long connectivity checks try before the relay is used.</param>
/// <param name="DirectRecheckInterval">While relayed, how often a direct path is tried again.</param>
/// <param name="HandshakeTimeout">How long after a path was set a first WireGuard handshake may take.</param>
/// <param name="StaleHandshake">A connected peer whose last handshake is older than this is reconnected.</param>
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

    // WireGuard re-handshakes every 2 minutes while traffic (or keepalive) flows; 3 missed minutes means the path is gone.
    public TimeSpan Stale => StaleHandshake ?? TimeSpan.FromMinutes(3);

    public TimeSpan Offers => OfferInterval ?? TimeSpan.FromSeconds(3);

    /// <summary>How long the side that starts the handshake waits for its peer to bind at the relay too.</summary>
    public static TimeSpan PairingWait { get; } = TimeSpan.FromSeconds(3);

    public TimeSpan PersistentKeepalive => Keepalive ?? TimeSpan.FromSeconds(25);

    // A persistent keepalive is due PersistentKeepalive after the last packet EITHER way, so between two idle
    // peers the side whose timer fires first resets the other's with every keepalive: one side may never send.
    // Silence alone therefore proves nothing; after this long without a byte the peer must answer a new
    // handshake (SilenceProbe), which finds a dead peer long before its handshake goes stale (3 min).
    public TimeSpan Silent => SilentPeer ?? (PersistentKeepalive * 3) + TimeSpan.FromSeconds(15);

    // WireGuard retries an unanswered initiation every 5 s: this gives a live peer two to three chances.
    public TimeSpan SilenceProbe => SilenceProbeTimeout ?? TimeSpan.FromSeconds(12);
}

/// <summary>Why a peer connection opens; a lazy wake-up decides which side starts the WireGuard handshake.</summary>
public enum OpenReason
{
    /// <summary>The network map (eager peers, or lazy connections turned off).</summary>
    Map,

    /// <summary>Traffic for the idle peer reached its stand-in endpoint.</summary>
    Traffic,

    /// <summary>The idle peer's offer arrived over signal: it has traffic for us.</summary>
    PeerOffer,
}
