using System.Collections.Concurrent;
using System.Net;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Modular.Abstractions.Proxy;
using Modular.Abstractions.WireGuard;
using Modular.Control.Crypto;
using Modular.Control.Management;
using Modular.Core.Config;
using Modular.Core.Engine;
using Modular.Core.Ice;
using Modular.Core.Status;
using Modular.Core.Tests.Firewall.Nftables;
using Modular.Core.Tests.Routing;
using Modular.WireGuard.Interface;

namespace Modular.Core.Tests.Engine;

/// <summary>
/// The engine with its OS replaced by doubles (interface, routes, nft): its parts are built all at once or not at all,
/// and clearing the peers of a removed agent goes through the apply gate like every other change of peers.
/// </summary>
public sealed class AgentEngineTests
{
    private static readonly LoginResponse Login = new() { PeerConfig = new PeerConfig { Address = "100.64.0.1/10" } };

    /// <summary>How a step goes wrong: it fails, it throws a cancellation, or the caller's token is cancelled there.</summary>
    public enum Failure
    {
        Fails,
        ThrowsCancelled,
        TokenCancelled,
    }

    /// <summary>Makes <paramref name="step"/> go wrong the <paramref name="failure"/> way: it throws, or the caller's token is cancelled there.</summary>
    private static void FailAt(EngineStep step, Failure failure, CancellationTokenSource stop)
    {
        switch (failure)
        {
            case Failure.Fails:
                throw new IOException("failed at " + step);
            case Failure.ThrowsCancelled:
                throw new OperationCanceledException("stopped at " + step);
            default:
                stop.Cancel();
                break;
        }
    }

    /// <summary>Every <see cref="EngineStep"/> the assembly takes, each way it can go wrong there.</summary>
    public static TheoryData<string, Failure> AssemblyFailures()
    {
        var data = new TheoryData<string, Failure>();
        foreach (var step in Enum.GetValues<EngineStep>().Where(EngineAssembly.Steps.Contains))
        {
            foreach (var failure in Enum.GetValues<Failure>())
            {
                data.Add(step.ToString(), failure);
            }
        }

        return data;
    }

    [Fact]
    public async Task The_assembly_takes_its_named_steps_in_order_and_the_other_steps_are_where_peers_change()
    {
        var seen = new ConcurrentQueue<EngineStep>();
        await using var rig = new EngineRig((step, _) =>
        {
            seen.Enqueue(step);
            return ValueTask.CompletedTask;
        });

        await rig.Engine.EnsureInterfaceAsync(Login, CancellationToken.None);

        Assert.Equal(EngineAssembly.Steps, seen);
        // Every step is an assembly step (the theory below fails the engine at each), a step of the run loop (cancelled
        // at each below), or a point where peers change.
        Assert.Equal([EngineStep.Failover, EngineStep.ClearPeers], Enum.GetValues<EngineStep>().Except(EngineAssembly.Steps).Except(AgentEngine.RunSteps));
    }

    [Theory]
    [MemberData(nameof(AssemblyFailures))]
    public async Task A_part_that_fails_once_leaves_nothing_behind_and_the_next_attempt_builds_the_engine(string step, Failure failure)
    {
        var failing = Enum.Parse<EngineStep>(step);
        var cancelled = failure != Failure.Fails;
        var failed = 0;
        using var stop = new CancellationTokenSource();
        await using var rig = new EngineRig((step, _) =>
        {
            if (step == failing && Interlocked.Exchange(ref failed, 1) == 0)
            {
                FailAt(step, failure, stop);
            }

            return ValueTask.CompletedTask;
        });

        var thrown = await Record.ExceptionAsync(() => rig.Engine.EnsureInterfaceAsync(Login, stop.Token));
        Assert.IsType(cancelled ? typeof(OperationCanceledException) : typeof(IOException), thrown);

        // Nothing is left behind: no half-built engine, and what was built is closed.
        Assert.Null(rig.Engine.Interface);
        Assert.Null(rig.Engine.Connections);
        Assert.All(rig.Interfaces, iface => Assert.True(iface.Closed && iface.Disposed, "the interface built before the failure is closed"));
        Assert.All(rig.Transports, transport => Assert.True(transport.Disposed, "the ICE socket built before the failure is closed"));
        Assert.Equal(rig.Nft.Applied.Count > 0 ? 1 : 0, rig.Nft.Deleted.Count); // a firewall table written is removed
        Assert.False(rig.Nft.TableExists, "no nftables table is left");
        Assert.Empty(rig.RouteOs.Routes);
        Assert.Empty(rig.RouteOs.Rules);
        Assert.Empty(rig.Recorder.Snapshot().Routes);
        Assert.False(rig.Recorder.Snapshot().Dns.Enabled, "no mesh resolver is left");
        // What the assertions above check was built: the interface from its step on, the firewall's table after its step.
        Assert.Equal(failing > EngineStep.Interface ? 1 : 0, rig.Interfaces.Count);
        Assert.Equal(failing > EngineStep.Firewall, rig.Nft.Applied.Count > 0);

        // The next attempt builds everything anew, and a map applies cleanly.
        var before = rig.Interfaces.Count;
        await rig.Engine.EnsureInterfaceAsync(Login, CancellationToken.None);
        var iface = Assert.IsType<TrackedWgIface>(rig.Engine.Interface);
        Assert.Equal(before + 1, rig.Interfaces.Count);
        Assert.False(iface.Closed);
        Assert.True(iface.Up);
        Assert.Equal((3, 0, 0), await rig.Engine.ApplyMapAsync(RouteMaps.Map(), CancellationToken.None));
        Assert.Equal(3, rig.Engine.Connections!.Count);
        Assert.Equal(3, rig.Recorder.Snapshot().Peers.Count);
    }

    /// <summary>Every step of the engine's start-up (the run loop's and the assembly's), by name.</summary>
    public static TheoryData<string> StartUpSteps()
    {
        var data = new TheoryData<string>();
        foreach (var step in AgentEngine.RunSteps.Concat(EngineAssembly.Steps))
        {
            data.Add(step.ToString());
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(StartUpSteps))]
    public async Task Cancelling_the_run_at_any_start_up_step_closes_everything_even_in_the_management_backoff(string step)
    {
        // Issue 17: the engine's token cancelled at each step, the retry backoff after the interface exists among them
        // (management fails right after the interface was built, as a lost server does), leaves nothing behind.
        var cancelAt = Enum.Parse<EngineStep>(step);
        using var serverKey = X25519KeyPair.Generate();
        var management = new FakeManagementServer(serverKey);
        using var stop = new CancellationTokenSource();
        var reached = 0;
        await using var rig = new EngineRig(
            (at, _) =>
            {
                if (cancelAt == EngineStep.ManagementBackoff && at == EngineStep.Sync)
                {
                    throw new IOException("management went away after the interface was built");
                }

                if (at == cancelAt && Interlocked.Exchange(ref reached, 1) == 0)
                {
                    stop.Cancel();
                }

                return ValueTask.CompletedTask;
            },
            management: management);

        await rig.RunAsync(stop.Token);

        Assert.Equal(1, reached);
        Assert.Equal(cancelAt > EngineStep.Interface ? 1 : 0, rig.Interfaces.Count);
        Assert.All(rig.Interfaces, iface => Assert.True(iface.Closed && iface.Disposed, "the interface is closed"));
        Assert.All(rig.Transports, transport => Assert.True(transport.Disposed, "the ICE socket is closed"));
        Assert.False(rig.Nft.TableExists, "no nftables table is left");
        Assert.Empty(rig.RouteOs.Routes);
        Assert.Empty(rig.RouteOs.Rules);
        Assert.False(rig.Recorder.Snapshot().Dns.Enabled, "no mesh resolver is left");
    }

    /// <summary>The steps where peers change (not assembly steps), each way it can go wrong there.</summary>
    public static TheoryData<string, Failure> ChangeFailures()
    {
        var data = new TheoryData<string, Failure>();
        foreach (var step in Enum.GetValues<EngineStep>().Except(EngineAssembly.Steps).Except(AgentEngine.RunSteps))
        {
            foreach (var failure in Enum.GetValues<Failure>())
            {
                // Clearing the peers of a removed agent takes no token: it always runs to the end.
                if (step != EngineStep.ClearPeers || failure != Failure.TokenCancelled)
                {
                    data.Add(step.ToString(), failure);
                }
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(ChangeFailures))]
    public async Task A_change_of_peers_that_fails_at_its_step_changes_nothing_releases_the_gate_and_the_next_attempt_applies(string step, Failure failure)
    {
        var failing = Enum.Parse<EngineStep>(step);
        var connected = new ConcurrentDictionary<WgKey, bool>();
        var reached = 0;
        using var stop = new CancellationTokenSource();
        await using var rig = new EngineRig(
            (step, _) =>
            {
                if (step == failing && Interlocked.Increment(ref reached) == 1)
                {
                    FailAt(step, failure, stop);
                }

                return ValueTask.CompletedTask;
            },
            peer => connected.ContainsKey(peer));
        var engine = rig.Engine;
        await engine.EnsureInterfaceAsync(Login, CancellationToken.None);
        var map = RouteMaps.Map(RouteMaps.Route("lan-a", "10.1.0.0/24", RouteMaps.RouterA, 10), RouteMaps.Route("lan-b", "10.1.0.0/24", RouteMaps.RouterB, 20));
        Assert.Equal((3, 0, 0), await engine.ApplyMapAsync(map, CancellationToken.None));
        var before = rig.Recorder.Snapshot().Routes;
        connected[RouteMaps.RouterB] = true; // failover has something to do

        Func<CancellationToken, Task> change = failing == EngineStep.Failover ? engine.FailOverRoutesAsync : _ => engine.ClearPeersAsync();
        var thrown = await Record.ExceptionAsync(() => change(stop.Token));
        Assert.IsType(failure == Failure.Fails ? typeof(IOException) : typeof(OperationCanceledException), thrown);

        // Nothing changed.
        Assert.Equal(3, engine.Connections!.Count);
        Assert.Equal(before, rig.Recorder.Snapshot().Routes);

        // The next attempt enters the gate (a gate left held would time this out) and does what the first one did not.
        await change(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(2, reached);
        if (failing == EngineStep.Failover)
        {
            Assert.NotEqual(before, rig.Recorder.Snapshot().Routes);
            await engine.FailOverRoutesAsync(CancellationToken.None);
            Assert.Equal(2, reached); // in force now: nothing stale is left to fail over
        }
        else
        {
            Assert.Equal(0, engine.Connections.Count);
            Assert.Empty(rig.RouteOs.Routes);
        }
    }

    [Fact]
    public async Task Removal_while_route_failover_is_applying_leaves_no_peer_and_no_route()
    {
        var connected = new ConcurrentDictionary<WgKey, bool>();
        Task? removal = null;
        AgentEngine? engine = null;
        await using var rig = new EngineRig(
            async (step, _) =>
            {
                if (step == EngineStep.Failover)
                {
                    // Failover holds the gate with its plan made: management's removal arrives now, and gets as far as it can.
                    removal = Task.Run(() => engine!.ClearPeersAsync(), CancellationToken.None);
                    await ConnPair.WaitForAsync(() => engine!.ApplyGateWaiting == 1 || removal.IsCompleted, "the removal waits for the apply gate");
                }
            },
            peer => connected.ContainsKey(peer));
        engine = rig.Engine;
        await engine.EnsureInterfaceAsync(Login, CancellationToken.None);

        // Two routing peers serve one network; neither is connected, so the metric picks A. Then only B connects.
        var map = RouteMaps.Map(RouteMaps.Route("lan-a", "10.1.0.0/24", RouteMaps.RouterA, 10), RouteMaps.Route("lan-b", "10.1.0.0/24", RouteMaps.RouterB, 20));
        Assert.Equal((3, 0, 0), await engine.ApplyMapAsync(map, CancellationToken.None));
        Assert.Equal(["10.1.0.0/24 dev mdl-test"], rig.RouteOs.Routes);
        connected[RouteMaps.RouterB] = true;

        await engine.FailOverRoutesAsync(CancellationToken.None);
        Assert.NotNull(removal);
        await removal;

        Assert.Equal(0, engine.Connections!.Count);
        Assert.Empty(rig.Recorder.Snapshot().Peers);
        Assert.Empty(rig.RouteOs.Routes);
        Assert.Empty(rig.Recorder.Snapshot().Routes);
    }

    /// <summary>
    /// An engine over doubles: interfaces and ICE sockets it creates are kept for inspection. <paramref name="management"/>
    /// answers its management calls (ManagementTrustTests); without it the engine is driven by the test's calls alone.
    /// </summary>
    internal sealed class EngineRig : IAsyncDisposable
    {
        private readonly FakeTimeProvider _time = new(DateTimeOffset.Parse("2026-12-01T00:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
        private readonly string _stateDir = Directory.CreateTempSubdirectory("modular-engine-").FullName;
        private bool _ran;

        /// <param name="configure">Changes the rig's config (e.g. flow logging); <paramref name="flowSinks"/>: the loaded flow-sink plugins; <paramref name="pskProviders"/>: the loaded PSK providers.</param>
        public EngineRig(Func<EngineStep, CancellationToken, ValueTask> beforeStep, Func<WgKey, bool>? isConnected = null, Grpc.Core.CallInvoker? management = null, string managementUrl = "https://management.invalid", ILoggerFactory? logs = null,
            Func<AgentConfig, AgentConfig>? configure = null, IReadOnlyDictionary<string, Abstractions.Flows.IFlowSinkFactory>? flowSinks = null, IReadOnlyDictionary<string, Modular.Abstractions.Security.IPresharedKeyProviderFactory>? pskProviders = null)
        {
            var config = new AgentConfig
            {
                ManagementUrls = [new Uri(managementUrl)],
                StateDir = _stateDir,
                Interface = new InterfaceConfig { Name = "mdl-test", Mode = WgInterfaceMode.Kernel },
                Dns = new DnsResolverConfig { Enabled = true, ListenPort = 0 },
            };
            config = configure?.Invoke(config) ?? config;
            var options = new EngineOptions(config, ConnPair.RandomKey(), new Dictionary<string, IProxyFactory>(), new NoServices(), "test", "engine-test")
            {
                UapiDirectory = null,
                FlowSinkFactories = flowSinks ?? new Dictionary<string, Abstractions.Flows.IFlowSinkFactory>(),
                PskProviderFactories = pskProviders ?? new Dictionary<string, Modular.Abstractions.Security.IPresharedKeyProviderFactory>(),
            };
            using (var identity = Modular.Control.Crypto.X25519KeyPair.FromPrivateKey(options.PrivateKey))
            {
                PublicKey = identity.PublicKey;
            }

            Recorder = new StatusRecorder(new InterfaceStatus("mdl-test", "kernel", 51820, 1280), new FeatureStatus(false, "15m", [], false, "auto", false, false, false), "k", new ServiceStatus("", false, null), new ServiceStatus("", false, null));
            var seams = new EngineSeams
            {
                CreateInterface = wg =>
                {
                    var iface = new TrackedWgIface(wg.Name);
                    var transport = new TrackedTransport();
                    Interfaces.Enqueue(iface);
                    Transports.Enqueue(transport);
                    return new EngineInterface(iface, transport, 1, transport);
                },
                RouteOs = RouteOs,
                Nftables = Nft,
                BeforeStep = beforeStep,
                IsConnected = isConnected,
                ManagementCalls = management is null ? null : _ => management,
            };
            Engine = new AgentEngine(options, Recorder, logs ?? NullLoggerFactory.Instance, _time, seams);
        }

        public AgentEngine Engine { get; }

        /// <summary>The engine's own public key (what a map names it by).</summary>
        public WgKey PublicKey { get; }

        /// <summary>The clock the engine runs on; it moves only when the test moves it.</summary>
        public FakeTimeProvider Time => _time;

        public string StateDir => _stateDir;

        public StatusRecorder Recorder { get; }

        public RecordingRouteOs RouteOs { get; } = new();

        public FakeNftables Nft { get; } = new();

        public ConcurrentQueue<TrackedWgIface> Interfaces { get; } = new();

        public ConcurrentQueue<TrackedTransport> Transports { get; } = new();

        /// <summary>Runs the engine (its run loop shuts it down when it returns; disposing the rig then does not again).</summary>
        public Task RunAsync(CancellationToken cancellationToken)
        {
            _ran = true;
            return Engine.RunAsync(cancellationToken);
        }

        public async ValueTask DisposeAsync()
        {
            if (!_ran)
            {
                await Engine.ShutdownAsync();
            }

            Directory.Delete(_stateDir, recursive: true);
        }
    }

    /// <summary>WireGuard as <see cref="RecordingWgIface"/> records it, plus whether it was set up, closed and disposed.</summary>
    internal sealed class TrackedWgIface(string name) : IWgIface
    {
        private readonly RecordingWgIface _inner = new();

        public ConcurrentDictionary<WgKey, WgPeerConfig> Peers => _inner.Peers;

        public volatile bool Up;
        public volatile bool Closed;
        public volatile bool Disposed;

        public string Name => name;

        public WgInterfaceMode Mode => WgInterfaceMode.Kernel;

        public IPNetwork Address => _inner.Address;

        public IPAddress OverlayIp => _inner.OverlayIp;

        public int Mtu => _inner.Mtu;

        public int ListenPort => _inner.ListenPort;

        public WgKey PublicKey => _inner.PublicKey;

        public IWgBindHook? BindHook => null;

        public ValueTask CreateAsync(CancellationToken cancellationToken) => ValueTask.CompletedTask;

        public ValueTask UpAsync(CancellationToken cancellationToken)
        {
            Up = true;
            return ValueTask.CompletedTask;
        }

        public ValueTask CloseAsync(CancellationToken cancellationToken)
        {
            Closed = true;
            return ValueTask.CompletedTask;
        }

        public ValueTask SetPeerAsync(WgPeerConfig peer, CancellationToken cancellationToken) => _inner.SetPeerAsync(peer, cancellationToken);

        public ValueTask RemovePeerAsync(WgKey publicKey, CancellationToken cancellationToken) => _inner.RemovePeerAsync(publicKey, cancellationToken);

        public ValueTask UpdateEndpointAsync(WgKey publicKey, IPEndPoint endpoint, CancellationToken cancellationToken) => _inner.UpdateEndpointAsync(publicKey, endpoint, cancellationToken);

        public ValueTask<IReadOnlyDictionary<WgKey, WgPeerStats>> GetStatsAsync(CancellationToken cancellationToken) => _inner.GetStatsAsync(cancellationToken);

        public ValueTask SetFwmarkAsync(uint mark, CancellationToken cancellationToken) => ValueTask.CompletedTask;

        public ValueTask DisposeAsync()
        {
            Disposed = true;
            return ValueTask.CompletedTask;
        }
    }

    /// <summary>An ICE socket that sends nowhere; remembers being closed.</summary>
    internal sealed class TrackedTransport : IIceTransport, IDisposable
    {
        public volatile bool Disposed;

        public int LocalPort => 51821;

        public void Send(ReadOnlySpan<byte> datagram, IPEndPoint to)
        {
        }

        public void SetReceiver(IStunReceiver receiver)
        {
        }

        public void Dispose() => Disposed = true;
    }

    private sealed class NoServices : IServiceProvider
    {
        public object? GetService(Type serviceType) => null;
    }
}
