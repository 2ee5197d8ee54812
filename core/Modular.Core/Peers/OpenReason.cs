namespace Modular.Core.Peers;

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
