using Grpc.Core;
using Grpc.Net.Client;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.WireGuard;
using Modular.Control;
using Modular.Control.Crypto;
using Modular.Control.Management;
using Modular.Core.Peers;
using Modular.Core.Status;

namespace Modular.Core.Engine;

/// <summary>
/// The agent's engine: logs in to management (<see cref="ManagementSession"/>), builds the interface and every part
/// that needs it once, all or none (<see cref="EngineAssembly"/>), keeps the signal connection
/// (<see cref="SignalSession"/>) and the server-reflexive candidate (<see cref="ReflexiveCandidateLoop"/>), puts every
/// network map, route failover and switch in force through one gate (<see cref="MapApplier"/>), and feeds the
/// <see cref="StatusRecorder"/> as things happen. Management, signal and relay failures are retried with jittered
/// backoff while established tunnels stay up. The interface is always closed (destroyed) when
/// <see cref="RunAsync"/> returns.
/// <para>
/// Locks: none of its own. <see cref="_parts"/> is written once (by the run loop) and read by every loop; the jobs
/// above guard their own state (the map applier's gate first, then the connection manager's locks).
/// </para>
/// </summary>
#pragma warning disable CA1001 // RunAsync creates the interface and connections and always disposes them before it returns.
public sealed class AgentEngine
#pragma warning restore CA1001
{
    /// <summary>The longest wait between management or signal attempts (a refused peer waits longer).</summary>
    internal static readonly TimeSpan MaxBackoff = TimeSpan.FromSeconds(30);

    /// <summary>The run loop's own steps around the assembly's (<see cref="EngineAssembly.Steps"/>), in order.</summary>
    internal static readonly IReadOnlyList<EngineStep> RunSteps = [EngineStep.Login, EngineStep.Sync, EngineStep.ManagementBackoff];

    // Immutable after construction.
    private readonly EngineOptions _options;
    private readonly StatusRecorder _recorder;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly X25519KeyPair _identity;
    private readonly ManagementSession _management;
    private readonly EngineAssembly _assembly;
    private readonly MapApplier _applier;
    private readonly RosenpassKeyDirectory _rosenpassKeys;
    private readonly SignalSession _signal;
    private readonly ReflexiveCandidateLoop _reflexive;
    private readonly EngineSeams _seams;
    private readonly FlowSwitch _flows;
    private readonly ManagementFlowUploader _flowUploader;

    // All of the interface's parts or none: set once, when every one of them was built (see EngineAssembly).
    private volatile EngineParts? _parts;

    // Run loop only: the pinned-key mismatch was logged as an error (once, until a login succeeds).
    private bool _keyMismatchReported;

    // Completed by the run loop once the interface is up or the engine waits to retry (see Started).
    private readonly TaskCompletionSource _started = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public AgentEngine(EngineOptions options, StatusRecorder recorder, ILoggerFactory loggerFactory, TimeProvider time)
        : this(options, recorder, loggerFactory, time, EngineSeams.Host)
    {
    }

    /// <summary>For tests: an engine whose OS is <paramref name="seams"/> (doubles for the interface, routes and nft).</summary>
    internal AgentEngine(EngineOptions options, StatusRecorder recorder, ILoggerFactory loggerFactory, TimeProvider time, EngineSeams seams)
    {
        _options = options;
        _recorder = recorder;
        _logger = loggerFactory.CreateLogger<AgentEngine>();
        _time = time;
        _seams = seams;
        _identity = X25519KeyPair.FromPrivateKey(options.PrivateKey);
        Func<EngineParts?> parts = () => _parts;
        // Every job logs as the engine, as before the split.
        _management = new ManagementSession(options, _identity, recorder, _logger, time, parts, seams);
        _signal = new SignalSession(options.Config, _identity, _management, parts, recorder, _logger, time);
        var config = options.Config;
        // Plugins ship flows through it as this peer, to the management server the agent is logged in to.
        _flowUploader = new ManagementFlowUploader(
            _identity,
            () => _management.Url is { } url && _management.ServerKey is { } key ? new FlowTarget(url, key) : null,
            seams.ManagementCalls,
            config.TlsCa,
            time);
        _flows = new FlowSwitch(
            config,
            options.FlowSinkFactories,
            name => new EnginePluginContext(FlowSinkSettings.For(config, name), loggerFactory, time, config.StateDir, options.Services) { FlowUploader = _flowUploader },
            config.Interface.Mode == WgInterfaceMode.Userspace,
            _logger);
        _rosenpassKeys = new RosenpassKeyDirectory(() => _management.Client, rosenpass => _management.Rosenpass = rosenpass, config.StateDir);
        _assembly = new EngineAssembly(options, _identity, _signal.Signaling, recorder, loggerFactory, _logger, time, seams, _flows.Sink, _flowUploader) { RosenpassKeys = _rosenpassKeys };
        _applier = new MapApplier(parts, _identity.PublicKey, options, seams, recorder, _logger, _management.ControlHosts, _flows);
        _reflexive = new ReflexiveCandidateLoop(_management, parts, _logger, time);
    }

    /// <summary>The connection manager once the interface exists (for tests and benchmarks).</summary>
    public ConnectionManager? Connections => _parts?.Manager;

    /// <summary>The interface once created.</summary>
    public IWgIface? Interface => _parts?.Iface;

    /// <summary>For tests: how many changes wait for the apply gate.</summary>
    internal int ApplyGateWaiting => _applier.GateWaiting;

    /// <summary>
    /// Completes once the interface is up, or once a first attempt failed and the engine waits to retry (management
    /// unreachable, say): the daemon then tells its service manager it is ready. Never completes when the engine stops
    /// or fails for good before either.
    /// </summary>
    public Task Started => _started.Task;

    /// <summary>Runs until <paramref name="cancellationToken"/> fires; throws <see cref="EngineFatalException"/> when it cannot go on.</summary>
    public async Task RunAsync(CancellationToken cancellationToken)
    {
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var background = new List<Task>();
        try
        {
            try
            {
                // A local "on" starts flow logging before any map: its sinks run (and status says so) with no traffic yet.
                // Rosenpass, by contrast, starts with the first map: until then status says it is pending (or missing).
                await _flows.ApplyAsync(null, stop.Token);
                _recorder.UpdateFeatures(_ => FeatureStatusBuilder.Build(_options.Config, _options.Switches.LazyConnections, AccountFeatures.None,
                    FeatureStatusBuilder.Merge(_flows.NotAvailable, RosenpassAvailability.BeforeFirstMap(_options.Config, _options.PskProviderFactories.Keys))));
                _recorder.SetFlows(_flows.Status());
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                return;
            }

            var backoff = new RetryBackoff(TimeSpan.FromSeconds(1));
            var refused = _management.Refused;
            while (!stop.IsCancellationRequested)
            {
                GrpcChannel? channel = null;
                TimeSpan? wait = null;
                long? syncingSince = null;
                try
                {
                    await _seams.BeforeAsync(EngineStep.Login, stop.Token);
                    (channel, var management, var login) = await _management.LoginAsync(stop.Token);
                    refused.OnAccepted();
                    _keyMismatchReported = false;
                    await EnsureInterfaceAsync(login, stop.Token);
                    _started.TrySetResult();
                    if (background.Count == 0)
                    {
                        background.Add(Task.Run(() => _signal.RunAsync(stop.Token), CancellationToken.None));
                        background.Add(Task.Run(() => StatsLoopAsync(stop.Token), CancellationToken.None));
                        background.Add(Task.Run(() => _reflexive.RunAsync(stop.Token), CancellationToken.None));
                    }

                    await _seams.BeforeAsync(EngineStep.Sync, stop.Token);
                    syncingSince = _time.GetTimestamp();
                    await _management.SyncAsync(management, _applier, stop.Token);
                    _management.SetStatus(false, "the network map stream ended");
                }
                catch (Exception e) when (IsOwnCancellation(e, stop.Token))
                {
                    break;
                }
                catch (EngineFatalException)
                {
                    throw;
                }
                catch (ServerKeyMismatchException e)
                {
                    // Not this network's server (or its key changed): nothing is sent to it, the tunnels stay, and the
                    // agent asks again with backoff (deleting the pin file accepts the new key). Said once, not per retry.
                    _management.SetStatus(false, e.Message);
                    if (!_keyMismatchReported)
                    {
                        _keyMismatchReported = true;
                        _logger.LogError("Management: {Problem}", e.Message);
                    }
                    else
                    {
                        _logger.LogDebug("Management: the server key still differs from the pinned one; retrying in about {Seconds} s", (int)backoff.Current.TotalSeconds);
                    }
                }
                catch (ManagementRefusedException e)
                {
                    // This peer was removed or expired, and management proved it (a refusal sealed to this agent by the
                    // pinned key): drop every tunnel, keep asking (an operator may re-add it), backing off to an hour and
                    // saying so at most once an hour. A bare PermissionDenied/NotFound proves nothing and is retried below.
                    _management.SetStatus(false, RefusedPeerBackoff.Describe(e.StatusCode, e.Status.Detail));
                    wait = refused.OnRefused(e.StatusCode, e.Status.Detail);
                    await _applier.ClearPeersAsync();
                }
#pragma warning disable CA1031 // Every other management failure is retried; the message goes to status.
                catch (Exception e)
#pragma warning restore CA1031
                {
                    var problem = ConnectionProblem.Describe(e, _management.LastLoginUrl);
                    _management.SetStatus(false, problem);
                    _logger.LogWarning("Management: {Problem}; retrying in about {Seconds} s", problem, (int)backoff.Current.TotalSeconds);
                }
                finally
                {
                    channel?.Dispose();
                }

                // A Sync that held for a while was a success; one that broke at once (or a login followed by a failure
                // to build the interface) backs off like any failure. Doubled after a refusal too (its own wait replaces this one).
                if (syncingSince is { } since)
                {
                    backoff.ResetIfLasted(_time.GetElapsedTime(since), MaxBackoff);
                }

                var delay = backoff.Next(MaxBackoff);
                _started.TrySetResult(); // retrying: as started as it gets until the next attempt
                try
                {
                    if (_parts is not null)
                    {
                        await _seams.BeforeAsync(EngineStep.ManagementBackoff, stop.Token);
                    }

                    await Task.Delay(wait ?? delay, _time, stop.Token);
                }
                catch (OperationCanceledException)
                {
                    break;
                }
            }
        }
        finally
        {
            await stop.CancelAsync();
            await Task.WhenAll(background.Select(t => t.ContinueWith(_ => { }, TaskScheduler.Default)));
            await ShutdownAsync();
        }
    }

    /// <summary>Puts a whole network map in force (through the map applier's gate).</summary>
    internal Task<(int Added, int Updated, int Removed)> ApplyMapAsync(NetworkMap map, CancellationToken cancellationToken)
        => _applier.ApplyMapAsync(map, cancellationToken);

    /// <summary>Management removed this agent: every tunnel goes, and the routes through them.</summary>
    internal Task ClearPeersAsync() => _applier.ClearPeersAsync();

    /// <summary>Plans the routes again when a routing peer that shares a network connected or dropped.</summary>
    internal Task FailOverRoutesAsync(CancellationToken cancellationToken) => _applier.FailOverRoutesAsync(cancellationToken);

    /// <summary>Applies the PSK provider's rotated keys, as the stats loop does every interval.</summary>
    internal Task ApplyKeyChangesAsync(CancellationToken cancellationToken) => _applier.ApplyKeyChangesAsync(cancellationToken);

    /// <summary>Builds the interface and its parts once, all or none (see <see cref="EngineAssembly"/>); later logins keep them.</summary>
    internal async Task EnsureInterfaceAsync(LoginResponse login, CancellationToken cancellationToken)
    {
        if (_parts is null)
        {
            _parts = await _assembly.BuildAsync(login, cancellationToken);
        }
    }

    /// <summary>Every <see cref="EngineOptions.StatsInterval"/>: counters into connections and status, then switches, idling and failover.</summary>
    private async Task StatsLoopAsync(CancellationToken cancellationToken)
    {
        while (!cancellationToken.IsCancellationRequested)
        {
            await DelayAsync(_time, _options.StatsInterval, cancellationToken);
            _recorder.SetFlows(_flows.Status());
            if (_parts is not { } parts || cancellationToken.IsCancellationRequested)
            {
                continue;
            }

            _signal.ReportRejected();
            if (parts.Dns is { } dns)
            {
                _recorder.SetDns(dns.Status());
            }

            try
            {
                parts.Manager.OnStats(await parts.Iface.GetStatsAsync(cancellationToken), parts.PresharedKeys.TrafficBytes);
            }
            catch (Exception e) when (e is IOException or InvalidOperationException or TimeoutException)
            {
                _logger.LogDebug("Reading interface counters failed: {Problem}", e.Message);
            }

            try
            {
                await _applier.ApplySwitchesAsync(cancellationToken);
                parts.PresharedKeys.FollowIdle(peer => parts.Manager.Find(peer)?.IsParked == true);
                await _applier.ApplyKeyChangesAsync(cancellationToken);
                await parts.Manager.IdleInactiveAsync(cancellationToken);
            }
            catch (Exception e) when (e is IOException or InvalidOperationException)
            {
                _logger.LogWarning("Parking inactive peers failed: {Problem}", e.Message);
            }

            try
            {
                await _applier.FailOverRoutesAsync(cancellationToken);
            }
            catch (Exception e) when (e is IOException or InvalidOperationException)
            {
                _logger.LogWarning("Route failover failed: {Problem}", e.Message);
            }
        }
    }

    /// <summary>Closes whatever exists: DNS, routes, connections, the interface, the firewall, then the flow sinks (RunAsync does this when it returns).</summary>
    internal async Task ShutdownAsync()
    {
        if (_parts is { } parts)
        {
            await _assembly.CloseAsync(parts);
        }

        // After the firewall: nothing reports flows any more.
        await _flows.DisposeAsync();
        _recorder.SetFlows(_flows.Status());

        // After the sinks that use it, before the key it seals with.
        await _flowUploader.DisposeAsync();
        _identity.Dispose();
        _rosenpassKeys.Dispose();
        _management.SetStopped();
        _signal.SetStopped();
    }

    /// <summary>Waits on the injected clock; returns early, without throwing, when cancelled.</summary>
    internal static async Task DelayAsync(TimeProvider time, TimeSpan delay, CancellationToken cancellationToken)
    {
        try
        {
            await Task.Delay(delay, time, cancellationToken);
        }
        catch (OperationCanceledException)
        {
        }
    }

    /// <summary>
    /// The failure is our own stop: a cancelled gRPC call surfaces as RpcException(Cancelled, "Call canceled
    /// by the client") rather than OperationCanceledException. Neither a warning nor retried.
    /// </summary>
    internal static bool IsOwnCancellation(Exception e, CancellationToken stopping)
        => stopping.IsCancellationRequested && e is OperationCanceledException or RpcException { StatusCode: StatusCode.Cancelled };
}
