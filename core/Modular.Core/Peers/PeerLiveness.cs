using Modular.Abstractions.Peers;
using Modular.Abstractions.WireGuard;

namespace Modular.Core.Peers;

/// <summary>
/// The liveness verdict on one peer's path, from the clock, WireGuard's counters and the watch state alone: no I/O,
/// no lock, no clock of its own (the connect loop looks once a second, or when woken, and does what it says). In
/// order: counters that moved (or a state other than Connected, or a handshake answering the probe) restart the
/// silence watch; a connected peer silent for <see cref="PeerConnOptions.Silent"/> is probed once and reconnected when
/// it stays silent <see cref="PeerConnOptions.SilenceProbe"/> more; a handshake on this path marks it Connected; one
/// older than <see cref="PeerConnOptions.Stale"/> is probed the same way (reconnected only when the probe goes
/// unanswered), and none within <see cref="PeerConnOptions.FirstHandshake"/> (while no probe is out) reconnects; a
/// relayed path tries the direct one every <see cref="PeerConnOptions.Recheck"/>. Before all that, a switch from the relay
/// to a direct path (<see cref="LivenessState.Trial"/>) releases the kept relay once proven, or returns to it when
/// unproven for <see cref="PeerConnOptions.DirectProof"/>.
/// A look can call for more than one action (a probe, then a stale handshake): the loop asks again with
/// <see cref="LivenessVerdict.Next"/> after each action until the verdict is Keep or RecheckDirect.
/// </summary>
/// <remarks>
/// A handshake's age alone never proves a path dead: WireGuard renews keys on its own only while it sends (the
/// initiator past REKEY_AFTER_TIME, or on receiving near REJECT_AFTER_TIME), and between idle peers the side that
/// sends the keepalives may be the responder, so a live idle pair's handshake can reach ~200 s before WireGuard
/// starts a new one. So an old handshake only asks the peer for a new one; a reconnect needs that request unanswered.
/// </remarks>
public sealed class PeerLiveness(PeerConnOptions options)
{
    /// <summary>A handshake this long before the path was set still counts for it (clocks of a second's grain).</summary>
    private static readonly TimeSpan PathSetGrace = TimeSpan.FromSeconds(1);

    /// <param name="relayedToWireGuard">The kept relayed proxy's <see cref="Modular.Abstractions.Proxy.IProxy.BytesToWireGuard"/> during a redirected trial (see <see cref="DirectTrial"/>).</param>
    public LivenessVerdict Decide(DateTimeOffset now, WgPeerStats? stats, LivenessState state, long? relayedToWireGuard = null)
    {
        var rx = stats?.RxBytes;
        var handshake = stats?.LastHandshake;
        var s = state;

        // A switch from the relay to a direct path: proven, it releases the kept relay; unproven for too long, it
        // returns to the relay. Until one or the other, the direct path is watched like any other.
        if (s.Trial is { } trial)
        {
            if (trial.ProvenBy(stats, relayedToWireGuard))
            {
                return new LivenessVerdict(LivenessAction.ReleaseRelay, s with { Trial = null });
            }

            if (now - trial.Since > options.DirectProof)
            {
                return new LivenessVerdict(
                    LivenessAction.ReturnToRelay,
                    s with { Trial = null, Type = ConnectionType.Relayed, LastDirectTry = now },
                    $"the direct path to {trial.Endpoint} carried nothing back within {(int)options.DirectProof.TotalSeconds} s");
            }
        }

        var onPath = handshake is { } h && h >= s.PathSet - PathSetGrace;
        var stale = onPath && now - handshake > options.Stale;
        var answered = s.ProbedAt is { } asked && handshake > asked;

        // Silence: only a connected peer's counters standing still count. Moving counters answer a probe only while
        // the handshake on this path is fresh: the probe re-sets the peer (its counters restart, its handshake is gone
        // until answered), and a stale handshake is answered by a newer one alone.
        if (rx != s.Received || s.Connection != PeerConnectionState.Connected || answered)
        {
            s = s with { Received = rx, ReceivedAt = now, ProbedAt = answered || (onPath && !stale) ? null : s.ProbedAt };
        }
        else if (now - s.ReceivedAt > options.Silent)
        {
            if (s.ProbedAt is null)
            {
                return new LivenessVerdict(LivenessAction.Probe, s with { ProbedAt = now }, $"nothing received for {(int)(now - s.ReceivedAt).TotalSeconds} s");
            }

            if (now - s.ProbedAt > options.SilenceProbe)
            {
                return Reconnect(s, $"nothing received for {(int)(now - s.ReceivedAt).TotalSeconds} s and no answer to a new handshake");
            }
        }

        // Handshake: on this path, fresh (or renewed when asked), and the first one within its time.
        if (onPath)
        {
            var age = (int)(now - handshake!.Value).TotalSeconds;
            if (stale && s.ProbedAt is null)
            {
                return new LivenessVerdict(LivenessAction.Probe, s with { ProbedAt = now }, $"the WireGuard handshake is {age} s old");
            }

            if (stale && now - s.ProbedAt > options.SilenceProbe)
            {
                return Reconnect(s, $"WireGuard handshake went stale (last {age} s ago) and no answer to a new handshake");
            }

            if (!stale && s.Connection != PeerConnectionState.Connected)
            {
                return new LivenessVerdict(LivenessAction.MarkConnected, s with { Connection = PeerConnectionState.Connected });
            }
        }
        else if (s.ProbedAt is { } probed) // a probe re-set the peer: its own timeout governs
        {
            if (now - probed > options.SilenceProbe)
            {
                return Reconnect(s, $"no handshake {(int)(now - probed).TotalSeconds} s after asking the peer: no answer to a new handshake");
            }
        }
        else if (now - s.PathSet > options.FirstHandshake)
        {
            return Reconnect(s, $"no WireGuard handshake over the {(s.Type == ConnectionType.P2P ? "direct" : "relayed")} path within {(int)options.FirstHandshake.TotalSeconds} s");
        }

        // Relayed: a direct path may have appeared.
        if (s.Type == ConnectionType.Relayed && !options.ForceRelay && now - s.LastDirectTry >= options.Recheck)
        {
            return new LivenessVerdict(LivenessAction.RecheckDirect, s with { LastDirectTry = now });
        }

        return new LivenessVerdict(LivenessAction.Keep, s);
    }

    private static LivenessVerdict Reconnect(LivenessState state, string reason) => new(LivenessAction.Reconnect, state, reason);
}
