using Modular.Abstractions.WireGuard;
using Modular.Core.Peers;

namespace Modular.Core.Lazy;

/// <summary>
/// Whether peers connect only when traffic for them appears, and which never idle.
/// </summary>
/// <param name="Enabled">Lazy connections on: from the agent's config (flag, env, TOML) or the account's setting.</param>
/// <param name="InactivityTimeout">A connected lazy peer that carried no traffic for this long goes back to Idle.</param>
/// <param name="AlwaysConnected">Peer names (full or first label) or overlay IPs that connect at once and never idle.</param>
public sealed record LazyOptions(bool Enabled, TimeSpan InactivityTimeout, IReadOnlyList<string> AlwaysConnected)
{
    private readonly TimeSpan? _connectingTimeout;

    public static LazyOptions Off { get; } = new(false, TimeSpan.FromMinutes(15), []);

    /// <summary>
    /// Peers serving (or standing by for) a route or exit node this client installed, and on a routing peer the peers
    /// its routes let in: never idle, like <see cref="AlwaysConnected"/>. A parked router would cost the routed
    /// subnet's first packets a wake-up, route failover would see a parked standby as "not connected" and pick by
    /// that, and a router that parked its client would drop the client's routed traffic until the client's next
    /// handshake (the map applier sets them from each <see cref="Routing.RoutePlan.RoutePeers"/>).
    /// </summary>
    public IReadOnlySet<WgKey> RoutePeers { get; init; } = new HashSet<WgKey>();

    /// <summary>
    /// A lazy peer still connecting this long after it woke goes back to Idle (an offline peer holds no attempt
    /// forever; its next packet wakes it again). Default: the inactivity timeout, but never under a minute, so a
    /// short inactivity timeout does not cut a slow first connection (checks, then the relay).
    /// </summary>
    public TimeSpan ConnectingTimeout
    {
        get => _connectingTimeout ?? (InactivityTimeout > TimeSpan.FromMinutes(1) ? InactivityTimeout : TimeSpan.FromMinutes(1));
        init => _connectingTimeout = value;
    }

    /// <summary>True when <paramref name="peer"/> waits Idle for traffic instead of connecting at once.</summary>
    public bool MayIdle(RemotePeerInfo peer)
    {
        if (!Enabled || RoutePeers.Contains(peer.PublicKey))
        {
            return false;
        }

        foreach (var entry in AlwaysConnected)
        {
            if (string.Equals(entry, peer.Ip, StringComparison.Ordinal)
                || string.Equals(entry, peer.Name, StringComparison.OrdinalIgnoreCase)
                || string.Equals(entry, FirstLabel(peer.Name), StringComparison.OrdinalIgnoreCase))
            {
                return false;
            }
        }

        return true;
    }

    private static string FirstLabel(string name)
    {
        var dot = name.IndexOf('.', StringComparison.Ordinal);
        return dot < 0 ? name : name[..dot];
    }
}
