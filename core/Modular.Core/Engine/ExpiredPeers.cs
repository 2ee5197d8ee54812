using Modular.Abstractions.Peers;
using Modular.Abstractions.WireGuard;
using Modular.Control.Management;
using Modular.Core.Status;

namespace Modular.Core.Engine;

/// <summary>
/// The map's peers whose login expired (<c>RemotePeer.expired</c>): the engine puts none of them in force (no
/// WireGuard peer, DNS record, route, lazy stand-in or PSK), and status shows each as Idle with reason
/// <see cref="Reason"/> until it leaves the map or logs in again. Used by the map applier, under its gate.
/// </summary>
internal sealed class ExpiredPeers(StatusRecorder recorder)
{
    /// <summary>The status reason of an expired peer.</summary>
    public const string Reason = "login expired";

    // The public keys (base64) whose status rows this class wrote and still owns.
    private HashSet<string> _shown = new(StringComparer.Ordinal);

    /// <summary>
    /// The map without its expired peers, and those peers. The same map when none expired; otherwise a copy (the map
    /// the caller holds stays whole: deltas apply to it).
    /// </summary>
    public static (NetworkMap Live, IReadOnlyList<RemotePeer> Expired) Split(NetworkMap map)
    {
        List<RemotePeer>? expired = null;
        foreach (var remote in map.RemotePeers)
        {
            if (remote.Expired)
            {
                (expired ??= []).Add(remote);
            }
        }

        if (expired is null)
        {
            return (map, []);
        }

        var live = map.Clone();
        live.RemotePeers.Clear();
        live.RemotePeers.AddRange(map.RemotePeers.Where(p => !p.Expired));
        return (live, expired);
    }

    /// <summary>
    /// Before the live peers are put in force: drops the rows of peers that are no longer expired, so a peer that
    /// logged in again gets its connection's row (written while the peers are applied) and keeps it.
    /// </summary>
    public void Forget(IReadOnlyList<RemotePeer> stillExpired)
    {
        var keep = stillExpired.Where(p => p.WgPubKey.Length == WgKey.Size).Select(p => Key(p)).ToHashSet(StringComparer.Ordinal);
        foreach (var key in _shown.Where(k => !keep.Contains(k)).ToList())
        {
            recorder.RemovePeer(key);
            _shown.Remove(key);
        }
    }

    /// <summary>
    /// After the live peers are in force (a peer that just expired has left WireGuard and lost its connection's row):
    /// one Idle row per expired peer.
    /// </summary>
    public void Show(IReadOnlyList<RemotePeer> expired)
    {
        var shown = new HashSet<string>(StringComparer.Ordinal);
        foreach (var remote in expired)
        {
            if (remote.WgPubKey.Length != WgKey.Size)
            {
                continue; // malformed: skipped with a warning by MapApplier.ToPeers' rules, not shown
            }

            var key = Key(remote);
            shown.Add(key);
            recorder.SetPeer(new PeerStatus(
                remote.Fqdn.Length > 0 ? remote.Fqdn : remote.Hostname,
                remote.AllowedIps.Count > 0 ? MapApplier.AddressOnly(remote.AllowedIps[0]) : "",
                key,
                PeerConnectionState.Idle,
                Reason,
                ConnectionType: null,
                LocalCandidate: null,
                RemoteCandidate: null,
                Relay: null,
                Proxy: null,
                LastStateChange: null,
                LastHandshake: null,
                RxBytes: 0,
                TxBytes: 0,
                LatencyMs: null,
                QuantumResistant: false,
                QuantumResistantSince: null));
        }

        _shown = shown;
    }

    private static string Key(RemotePeer remote) => new WgKey(remote.WgPubKey.Span).ToBase64();
}
