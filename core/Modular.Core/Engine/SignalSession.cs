using Grpc.Core;
using Microsoft.Extensions.Logging;
using Modular.Control;
using Modular.Control.Crypto;
using Modular.Control.Signal;
using Modular.Core.Config;
using Modular.Core.Status;

namespace Modular.Core.Engine;

/// <summary>
/// This agent's session with signal: connects to the signal service management announced (proving management's key),
/// hands every verified message to the connection manager, reconnects with backoff, says goodbye to peers when the
/// engine stops, and reports messages the client dropped as forged. Peer connections send through
/// <see cref="Signaling"/>, whose client this session swaps on every reconnect.
/// <para>
/// Lock order: the <see cref="Signaling"/> object guards only the rejected-message report (<see cref="_rejectedClient"/>,
/// <see cref="_rejectedReported"/>); nothing else is taken while it is held.
/// </para>
/// </summary>
internal sealed class SignalSession
{
    // Immutable after construction.
    private readonly AgentConfig _config;
    private readonly X25519KeyPair _identity;
    private readonly ManagementSession _management;
    private readonly Func<EngineParts?> _parts;
    private readonly StatusRecorder _recorder;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;

    // Guarded by lock (Signaling): which client's dropped messages were reported, and how many.
    private SignalClient? _rejectedClient;
    private long _rejectedReported;
    private long _staleReported;

    public SignalSession(AgentConfig config, X25519KeyPair identity, ManagementSession management, Func<EngineParts?> parts, StatusRecorder recorder, ILogger logger, TimeProvider time)
    {
        _config = config;
        _identity = identity;
        _management = management;
        _parts = parts;
        _recorder = recorder;
        _logger = logger;
        _time = time;
    }

    /// <summary>Signal as peer connections use it (the client in use, or none).</summary>
    public EngineSignaling Signaling { get; } = new();

    /// <summary>Keeps the signal connection until <paramref name="cancellationToken"/> fires.</summary>
    public async Task RunAsync(CancellationToken cancellationToken)
    {
        var backoff = new RetryBackoff(TimeSpan.FromSeconds(1));
        var refusedSignal = false;
        while (!cancellationToken.IsCancellationRequested)
        {
            long? connectedSince = null;
            var url = _management.Services?.SignalUrl ?? "";
            if (url.Length == 0)
            {
                _recorder.SetSignal(new ServiceStatus("", false, "management announced no signal service"));
                await AgentEngine.DelayAsync(_time, backoff.Next(cap: AgentEngine.MaxBackoff), cancellationToken);
                continue;
            }

            if (Uri.TryCreate(url, UriKind.Absolute, out var signalUrl))
            {
                _management.WarnIfPlaintext(signalUrl, "Signal");
            }

            try
            {
                using var channel = ControlChannel.Create(url, _config.TlsCa);
                await using var client = await SignalClient.ConnectAsync(channel, _identity, cancellationToken, expectedServerKey: _management.ServerKey, time: _time, instanceId: _management.InstanceId);
                Signaling.Client = client;
                _recorder.SetSignal(new ServiceStatus(url, true, null));
                _logger.LogInformation("Connected to signal {Signal}", url);
                connectedSince = _time.GetTimestamp();
                try
                {
                    await foreach (var inbound in client.Inbound.ReadAllAsync(cancellationToken))
                    {
                        try
                        {
                            var parts = _parts() ?? throw new InvalidOperationException("the engine's interface is not built yet");
                            await parts.Manager.OnSignalAsync(inbound, cancellationToken);
                        }
                        catch (Exception e) when (e is not OperationCanceledException)
                        {
                            _logger.LogWarning("Signal message from {Peer} not handled: {Problem}", inbound.Peer.ToShortString(), Describe(e));
                        }
                    }
                }
                catch (Exception e) when (AgentEngine.IsOwnCancellation(e, cancellationToken) && _parts()?.Manager is { } manager)
                {
                    // Stopping: while signal is still up, peers learn it now (their routes fail over at once).
                    await manager.SayGoodbyeAsync(Signaling, TimeSpan.FromSeconds(2));
                    throw;
                }

                Signaling.Client = null;
                _recorder.SetSignal(new ServiceStatus(url, false, "the signal stream ended"));
            }
            catch (Exception e) when (AgentEngine.IsOwnCancellation(e, cancellationToken))
            {
                break;
            }
#pragma warning disable CA1031 // Signal failures are retried; the message goes to status.
            catch (Exception e)
#pragma warning restore CA1031
            {
                Signaling.Client = null;
                var problem = ConnectionProblem.Describe(e, Uri.TryCreate(url, UriKind.Absolute, out var target) ? target : null);
                _recorder.SetSignal(new ServiceStatus(url, false, problem));
                if (_management.Refused.IsRefused && e is RpcException { StatusCode: StatusCode.PermissionDenied or StatusCode.NotFound })
                {
                    // Management already said (once an hour) that this peer was removed; signal agrees, quietly.
                    _logger.LogDebug("Signal {Signal}: {Problem}; this peer is refused, retrying with backoff", url, problem);
                    refusedSignal = true;
                }
                else
                {
                    _logger.LogWarning("Signal {Signal}: {Problem}; retrying", url, problem);
                }
            }

            // A stream that held for a while was a success; one the server ends at once backs off like a failure.
            if (connectedSince is { } since)
            {
                backoff.ResetIfLasted(_time.GetElapsedTime(since), AgentEngine.MaxBackoff);
            }

            var delay = backoff.Next(cap: refusedSignal ? RefusedPeerBackoff.MaxDelay : AgentEngine.MaxBackoff);
            refusedSignal = false;
            await AgentEngine.DelayAsync(_time, delay, cancellationToken);
        }

        Signaling.Client = null;
    }

    /// <summary>Logs signal messages the client dropped (forged, tampered, undecodable, stale) since the last report.</summary>
    public void ReportRejected()
    {
        var client = Signaling.Client;
        if (client is null)
        {
            return;
        }

        lock (Signaling)
        {
            if (!ReferenceEquals(client, _rejectedClient))
            {
                _rejectedClient = client;
                _rejectedReported = 0;
                _staleReported = 0;
            }

            var stale = client.StaleCount;
            if (stale > _staleReported)
            {
                _logger.LogWarning(
                    "Signal: dropped {Count} stale message(s), sealed more than {MaxAge} s ago or more than {MaxAhead} s ahead of this host's clock (replayed, or a clock is off: keep clocks in sync)",
                    stale - _staleReported, (int)SignalClient.MaxAge.TotalSeconds, (int)SignalClient.MaxAhead.TotalSeconds);
                _staleReported = stale;
            }

            var rejected = client.RejectedCount;
            if (rejected > _rejectedReported)
            {
                _logger.LogWarning("Signal: dropped {Count} message(s) that failed verification (forged, tampered or undecodable)", rejected - _rejectedReported);
                _rejectedReported = rejected;
            }
        }
    }

    /// <summary>Status when the engine stops.</summary>
    public void SetStopped() => _recorder.SetSignal(new ServiceStatus(_management.Services?.SignalUrl ?? "", false, "stopped"));

    private static string Describe(Exception e) => e switch
    {
        RpcException rpc => $"{rpc.StatusCode}: {rpc.Status.Detail}",
        _ => e.Message,
    };
}
