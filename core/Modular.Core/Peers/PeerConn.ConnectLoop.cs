using Microsoft.Extensions.Logging;
using Modular.Abstractions.Peers;
using Modular.Abstractions.WireGuard;
using Modular.Control.Signal;
using Modular.Core.Ice;

namespace Modular.Core.Peers;

/// <summary>
/// The connect loop of a <see cref="PeerConn"/> (the other half of the type, in its own file to keep each under
/// ~450 lines; fields and locks are declared in PeerConn.cs): credentials over signal, a direct path or the relay,
/// then the watch that acts on <see cref="PeerLiveness"/>'s verdicts until the attempt fails or the peer restarts.
/// </summary>
public sealed partial class PeerConn
{
    private async Task RunAsync(CancellationToken cancellationToken)
    {
        var backoff = new RetryBackoff(TimeSpan.FromSeconds(1));
        while (!cancellationToken.IsCancellationRequested)
        {
            string reason;
            try
            {
                await ConnectOnceAsync(cancellationToken);
                reason = "the peer restarted its connection";
                backoff.Reset();
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                return;
            }
#pragma warning disable CA1031 // Any failure of one attempt is a reason shown in status, then a retry.
            catch (Exception e)
#pragma warning restore CA1031
            {
                reason = e.Message;
                _logger.LogInformation("Peer {Peer}: {Reason}; retrying", Name, reason);

                // A failed attempt starts a new session: the peer may still believe the old one works (it went silent
                // only towards us, or its side never saw the failure) and would keep its WireGuard session and wait;
                // a new session id makes it start over too, so both sides handshake afresh.
                _session.Renew();
            }

            // A new attempt is a new WireGuard session: with the old one kept, a path set while its keys were
            // still fresh (the remote restarted, or an attempt just failed over) never sees the handshake it
            // waits for, and the peer hangs in Connecting until the next rekey, two minutes on.
            await TeardownPathAsync(removeWireGuardPeer: true);
            SetState(PeerConnectionState.Connecting, reason);
            try
            {
                await Task.Delay(backoff.Next(cap: PeerConnOptions.MaxRetryDelay), _time, cancellationToken);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    private async Task ConnectOnceAsync(CancellationToken cancellationToken)
    {
        var local = _session.BeginAttempt();
        using var registration = _direct.Register(local, _session.OnValidCheck);

        // 1. Credentials: offer until the peer answered (or offered) with its own.
        var offerEvery = _options.Offers;
        while (_session.Remote is null)
        {
            try
            {
                await _session.SendCredentialsAsync(SignalBody.Types.Type.Offer, cancellationToken);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                SetReason($"signal unavailable: {e.Message}");
            }

            await WaitForWakeAsync(offerEvery, cancellationToken);
            offerEvery = TimeSpan.FromTicks(Math.Min(offerEvery.Ticks * 2, TimeSpan.FromSeconds(15).Ticks));
        }

        // 2. Path: direct when a check passes, else the relay.
        if (_options.ForceRelay)
        {
            await UseRelayAsync("force_relay is on", cancellationToken);
        }
        else if (await TryDirectAsync(cancellationToken) is null)
        {
            await UseRelayAsync("no direct path answered the connectivity checks", cancellationToken);
        }

        // 3. Watch: handshake on the chosen path, staleness, a restarted peer, a direct path appearing.
        var watch = LivenessState.OnPath(_time.GetUtcNow(), State, ConnectionType);
        while (true)
        {
            await WaitForWakeAsync(TimeSpan.FromSeconds(1), cancellationToken);
            var now = _time.GetUtcNow();
            WgPeerStats? stats;
            long? relayedNow;
            bool relayLostOnTrial;
            lock (_lock)
            {
                if (_session.RemoteRestarted)
                {
                    return;
                }

                if (_relayed.Lost && _type == Abstractions.Peers.ConnectionType.Relayed)
                {
                    throw new IOException("the relayed connection closed");
                }

                if (_session.RemoteLeaving)
                {
                    throw new IOException("the peer said goodbye (it is stopping)");
                }

                // The remote closed the relayed connection we kept for a direct trial: it proved the direct path
                // on its side, and there is nothing left to return to.
                relayLostOnTrial = _relayed.Lost && _type == Abstractions.Peers.ConnectionType.P2P && _relayed.Path is not null;

                stats = _stats;
                watch = watch with { Connection = _state, Type = _type };

                // Each side checks on its own, so the peer's checks can pass (it went P2P, its WireGuard sending to
                // our address, never to the relay) while ours failed (a check window that ended early, checks sent
                // before the peer answered for its credentials). Its valid check for this session proves the direct
                // path: a relayed side tries it now, not at the periodic recheck (the two would disagree until then).
                if (_type == Abstractions.Peers.ConnectionType.Relayed && _session.TakePeerCheckedDirect())
                {
                    watch = watch with { LastDirectTry = now - _options.Recheck };
                }
            }

            // Read after the stats were polled, so it holds at least every relayed byte they count (see DirectTrial).
            relayedNow = watch.Trial?.RelayedAtSwitch is null ? null : _relayed.Path?.Proxy.BytesToWireGuard;
            if (relayLostOnTrial)
            {
                _logger.LogInformation("Peer {Peer}: the relayed connection kept during the switch to P2P closed; staying direct", Name);
                await CloseRelayAsync();
                watch = watch with { Trial = null };
            }

            watch = await ActOnLivenessAsync(now, stats, relayedNow, watch, cancellationToken);
        }
    }

    /// <summary>
    /// Does what <see cref="PeerLiveness"/> says about one look at the peer, asking again after each action (one look
    /// can call for a probe and then a reconnect) until the verdict is Keep or a direct recheck; throws to reconnect.
    /// Returns the watch state for the next look.
    /// </summary>
    private async Task<LivenessState> ActOnLivenessAsync(DateTimeOffset now, WgPeerStats? stats, long? relayedNow, LivenessState watch, CancellationToken cancellationToken)
    {
        while (true)
        {
            var verdict = _liveness.Decide(now, stats, watch, relayedNow);
            watch = verdict.Next;
            switch (verdict.Action)
            {
                case LivenessAction.Keep:
                    return watch;
                case LivenessAction.Reconnect:
                    throw new TimeoutException(verdict.Reason);
                case LivenessAction.Probe:
                    await ProbeWithHandshakeAsync(verdict.Reason!, cancellationToken);
                    break;
                case LivenessAction.MarkConnected:
                    SetState(PeerConnectionState.Connected, null);
                    _logger.LogInformation("Peer {Peer} ({Ip}) connected {Type}", Name, Peer.Ip, watch.Type);
                    if (!StartsHandshake)
                    {
                        // Now that the session exists, this side keeps the path alive too.
                        await _wireGuard.RefreshAsync(cancellationToken);
                    }

                    break;
                case LivenessAction.RecheckDirect:
                    if (await FindDirectAsync(cancellationToken) is { } found)
                    {
                        // The remote may still send through the relay (its recheck comes on its own time): the proxy
                        // stays until the direct path carries something back (DirectTrial), else it is used again.
                        var trial = _relayed.Path is { } kept ? KeepRelayForTrial(kept, found.Endpoint, now) : null;
                        await UseDirectAsync(found, cancellationToken);
                        if (trial is not null)
                        {
                            _logger.LogInformation("Peer {Peer}: a direct path appeared; switched from the relay to P2P, keeping the relay until the direct path is proven", Name);
                            watch = watch with { Trial = trial };
                        }
                    }

                    return watch;
                case LivenessAction.ReleaseRelay:
                    _logger.LogInformation("Peer {Peer}: the direct path is proven; closing the relayed connection", Name);
                    await CloseRelayAsync();
                    break;
                case LivenessAction.ReturnToRelay:
                    await ReturnToRelayAsync(verdict.Reason!, cancellationToken);
                    break;
            }
        }
    }

    /// <summary>
    /// A connected peer was silent for <see cref="PeerConnOptions.Silent"/>, or its handshake is older than
    /// <see cref="PeerConnOptions.Stale"/>. Neither alone proves anything (between idle peers one side's keepalives can
    /// keep resetting the other's, so that side never sends, and WireGuard renews keys only while it sends), but a live
    /// peer answers a handshake: the WireGuard peer is set anew on the same path, with its keepalive, which sends an
    /// initiation at once.
    /// </summary>
    private async Task ProbeWithHandshakeAsync(string why, CancellationToken cancellationToken)
    {
        _logger.LogInformation("Peer {Peer}: {Why}; asking it for a new handshake", Name, why);
        await _wireGuard.ProbeAsync(cancellationToken);
    }

    /// <summary>Sets WireGuard on a direct path when the connectivity checks find one; returns its endpoint, else null.</summary>
    private async Task<System.Net.IPEndPoint?> TryDirectAsync(CancellationToken cancellationToken)
    {
        if (await FindDirectAsync(cancellationToken) is not { } found)
        {
            return null;
        }

        await UseDirectAsync(found, cancellationToken);
        return found.Endpoint;
    }

    /// <summary>The connectivity checks' winner and the WireGuard endpoint for it; null when no check passed.</summary>
    private async Task<(CheckResult Result, System.Net.IPEndPoint Endpoint)?> FindDirectAsync(CancellationToken cancellationToken)
    {
        var (local, remote, targets) = _session.CheckTargets();
        if (await _direct.FindAsync(local, remote, targets, cancellationToken) is not { } result)
        {
            return null;
        }

        return (result, _direct.WireGuardEndpointFor(result.Remote));
    }

    /// <summary>Points WireGuard at the direct path the checks found and shows the peer P2P.</summary>
    private async Task UseDirectAsync((CheckResult Result, System.Net.IPEndPoint Endpoint) found, CancellationToken cancellationToken)
    {
        var (result, endpoint) = found;
        await _wireGuard.SetEndpointAsync(endpoint, cancellationToken);
        IceCandidate remoteCandidate;
        lock (_lock)
        {
            remoteCandidate = _session.RemoteCandidateAt(result.Remote);
            _type = Abstractions.Peers.ConnectionType.P2P;
            _remoteCandidate = remoteCandidate.ToString();
            _localCandidate = _direct.LocalCandidateFor(remoteCandidate)?.ToString();
            _latencyMs = Math.Round(result.RoundTrip.TotalMilliseconds, 2);
        }

        _logger.LogInformation("Peer {Peer}: direct path to {Remote} (rtt {Rtt:F1} ms)", Name, remoteCandidate, result.RoundTrip.TotalMilliseconds);
        _changed(this);
    }

    /// <summary>
    /// Issue 16, the event that calls <see cref="Abstractions.Proxy.IProxy.RedirectAs"/>: a relayed peer switches to
    /// <paramref name="direct"/> and keeps <paramref name="kept"/> for the trial (the remote may still send through the
    /// relay until its own switch). Called before WireGuard is pointed at the direct path, it makes the proxy hand what
    /// still comes through the relay to WireGuard as from <paramref name="direct"/>, so WireGuard does not roam back to
    /// the proxy and answer through the relay while the direct path is tried. Proof then needs bytes beyond those the
    /// proxy handed over, so the baseline is a pair that cannot overcount: WireGuard's counter from the last stats and
    /// the proxy's count read before they were polled (<see cref="_relayedBeforeStats"/>). A proxy that does not count
    /// (null <see cref="Abstractions.Proxy.IProxy.BytesToWireGuard"/>), or a baseline not of this proxy, is not
    /// redirected: relayed packets then roam WireGuard to the proxy, which keeps the proof honest.
    /// </summary>
    private DirectTrial KeepRelayForTrial(RelayedPath kept, System.Net.IPEndPoint direct, DateTimeOffset now)
    {
        long? rx;
        (Abstractions.Proxy.IProxy Proxy, long Bytes)? before;
        lock (_lock)
        {
            rx = _stats?.RxBytes;
            before = _relayedBeforeStats;
        }

        if (rx is null || before is not { } baseline || !ReferenceEquals(baseline.Proxy, kept.Proxy))
        {
            return new DirectTrial(now, direct, rx);
        }

        try
        {
            kept.Proxy.RedirectAs(direct);
        }
        catch (Exception e) when (e is ObjectDisposedException or InvalidOperationException or NotSupportedException)
        {
            // Closed underneath (the loop notices the lost relay), or a proxy that cannot: the trial goes on unredirected.
            _logger.LogInformation("Peer {Peer}: the {Proxy} proxy kept for the switch cannot redirect ({Reason})", Name, kept.Proxy.Kind, e.Message);
            return new DirectTrial(now, direct, rx);
        }

        lock (_lock)
        {
            _relayRedirected = true;
        }

        _logger.LogInformation("Peer {Peer}: packets still arriving through the relay reach WireGuard as from {Direct} ({Proxy} proxy redirected) until the direct path is proven", Name, direct, kept.Proxy.Kind);
        return new DirectTrial(now, direct, rx, baseline.Bytes);
    }

    /// <summary>
    /// The direct path a relayed peer switched to carried nothing back: WireGuard goes back to the relayed proxy kept
    /// for this (the next recheck tries the direct path again). With that proxy gone meanwhile, a new attempt starts.
    /// </summary>
    private async Task ReturnToRelayAsync(string why, CancellationToken cancellationToken)
    {
        if (_relayed.Path is not { } path || _relayed.Lost)
        {
            throw new TimeoutException($"{why}, and the relayed connection is gone");
        }

        await PointAtRelayAsync(path, cancellationToken);
        _logger.LogInformation("Peer {Peer}: {Why}; back on the relay through {Relay}", Name, why, path.RelayAddress);
    }

    private async Task UseRelayAsync(string why, CancellationToken cancellationToken)
    {
        SetReason($"{why}; connecting through the relay");
        var path = await _relayed.ConnectAsync(StartsHandshake, cancellationToken);
        await PointAtRelayAsync(path, cancellationToken);
        _logger.LogInformation("Peer {Peer}: relayed through {Relay} ({Why}), proxy {Proxy}", Name, path.RelayAddress, why, path.Proxy.Kind);
    }

    /// <summary>
    /// Points WireGuard at <paramref name="path"/>'s proxy and shows the peer Relayed. A redirect made for a direct
    /// trial is undone first, so relayed packets come from the proxy's own address again, the endpoint WireGuard is
    /// given (undone after, they would roam WireGuard back to the direct endpoint).
    /// </summary>
    private async Task PointAtRelayAsync(RelayedPath path, CancellationToken cancellationToken)
    {
        bool redirected;
        lock (_lock)
        {
            redirected = _relayRedirected;
            _relayRedirected = false;
        }

        if (redirected)
        {
            path.Proxy.RedirectAs(path.Proxy.EndpointAddr);
        }

        await _wireGuard.SetEndpointAsync(path.Proxy.EndpointAddr, cancellationToken);
        lock (_lock)
        {
            _type = Abstractions.Peers.ConnectionType.Relayed;
            _localCandidate = null;
            _remoteCandidate = $"relay {path.RelayAddress}";
            _latencyMs = null;
        }

        _changed(this);
    }

    /// <summary>
    /// Both sides set the peer within a moment of each other once a path is chosen. If both added it
    /// with a persistent keepalive, both would send an initiation at once; crossing initiations leave
    /// each side a responder waiting for confirmation, and WireGuard only recovers on its 5 s retry
    /// (seen as "Connected" with no traffic for seconds). So only the side with the larger public key
    /// starts the handshake; the other adds its keepalive once connected. A lazy wake-up decides otherwise
    /// (see <see cref="OpenAsync(OpenReason, CancellationToken)"/>).
    /// </summary>
    private bool StartsHandshake
    {
        get
        {
            lock (_lock)
            {
                if (_startsHandshake is { } decided)
                {
                    return decided;
                }
            }

            Span<byte> local = stackalloc byte[WgKey.Size];
            Span<byte> remote = stackalloc byte[WgKey.Size];
            _iface.PublicKey.CopyTo(local);
            PublicKey.CopyTo(remote);
            return local.SequenceCompareTo(remote) > 0;
        }
    }
}
