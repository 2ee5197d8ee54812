using Modular.Abstractions.Flows;
using Modular.Abstractions.Plugins;
using Modular.Abstractions.WireGuard;
using Modular.Control.Management;
using Modular.Core.Config;
using Modular.Core.Tests.Firewall;
using static Modular.Core.Tests.Engine.AgentEngineTests;

namespace Modular.Core.Tests.Engine;

/// <summary>
/// Flow logging through the engine (<see cref="Modular.Core.Engine.AgentEngine"/> over the <see cref="EngineRig"/>'s
/// doubles): the account's setting in each map switches it, the sinks are created on the first "on" and closed at
/// stop, and status follows. The rig's interface double is kernel-like, so its firewall is the nftables one and no
/// packet reaches the sink here: the userspace packet path is FlowCollectionTests' and the E2E AccountFeatureTests'.
/// </summary>
public sealed class AgentEngineFlowTests
{
    private static readonly LoginResponse Login = new() { PeerConfig = new PeerConfig { Address = "100.64.0.1/10" } };

    private static NetworkMap Map(bool flows) => new() { Serial = 1, Settings = new AccountSettings { Flows = new FlowSettings { Enabled = flows } } };

    private static AgentConfig Userspace(AgentConfig config, bool? local = null) => config with
    {
        Interface = config.Interface with { Mode = WgInterfaceMode.Userspace },
        Netflow = new NetflowConfig { Enabled = new LocalToggle(Config: local) },
    };

    [Fact]
    public async Task The_account_turns_flow_logging_on_and_off_with_each_map_and_the_sinks_close_at_stop()
    {
        var factory = new Factory();
        var rig = new EngineRig((_, _) => ValueTask.CompletedTask, configure: c => Userspace(c), flowSinks: new Dictionary<string, IFlowSinkFactory> { ["netflow"] = factory });
        await rig.Engine.EnsureInterfaceAsync(Login, CancellationToken.None);

        await rig.Engine.ApplyMapAsync(Map(flows: false), CancellationToken.None);
        Assert.False(rig.Recorder.Snapshot().Features.Netflow);
        Assert.Empty(factory.Created);

        await rig.Engine.ApplyMapAsync(Map(flows: true), CancellationToken.None);
        var features = rig.Recorder.Snapshot().Features;
        Assert.True(features.Netflow);
        Assert.Equal("account", features.NetflowSource);
        var sink = Assert.Single(factory.Created);

        await rig.Engine.ApplyMapAsync(Map(flows: false), CancellationToken.None);
        Assert.False(rig.Recorder.Snapshot().Features.Netflow);
        Assert.Equal(0, sink.Disposals);

        await rig.DisposeAsync();
        Assert.Equal(1, sink.Disposals);
        Assert.Single(factory.Created);
        Assert.False(rig.Recorder.Snapshot().Flows.Running);
    }

    [Fact]
    public async Task In_kernel_mode_the_account_asking_for_flows_runs_the_sinks_conntrack_reports_the_flows()
    {
        var factory = new Factory();
        await using var rig = new EngineRig((_, _) => ValueTask.CompletedTask, flowSinks: new Dictionary<string, IFlowSinkFactory> { ["netflow"] = factory });
        await rig.Engine.EnsureInterfaceAsync(Login, CancellationToken.None);

        await rig.Engine.ApplyMapAsync(Map(flows: true), CancellationToken.None);

        // Kernel mode has sinks too since KernelFlowSource (conntrack and the table's drop logs) reports the flows.
        var features = rig.Recorder.Snapshot().Features;
        Assert.True(features.Netflow);
        Assert.False(features.Unavailable.ContainsKey("netflow"));
        Assert.Single(factory.Created);
    }

    [Fact]
    public async Task A_local_on_runs_the_sinks_from_the_start_before_any_login_and_closes_them_when_the_engine_stops()
    {
        var factory = new Factory();
        var rig = new EngineRig((_, _) => ValueTask.CompletedTask, configure: c => Userspace(c, local: true), flowSinks: new Dictionary<string, IFlowSinkFactory> { ["netflow"] = factory });
        using var stop = new CancellationTokenSource();
        var run = rig.RunAsync(stop.Token);

        // Management is unreachable (management.invalid) and the clock never moves: only the start can have done this.
        var started = System.Diagnostics.Stopwatch.StartNew();
        while (!rig.Recorder.Snapshot().Flows.Running && started.Elapsed < TimeSpan.FromSeconds(30))
        {
            await Task.Delay(20);
        }

        var status = rig.Recorder.Snapshot();
        Assert.True(status.Flows.Running);
        Assert.True(status.Features.Netflow);
        Assert.Equal("netflow", Assert.Single(status.Flows.Sinks).Name);
        await stop.CancelAsync();
        await run;
        await rig.DisposeAsync();
        Assert.Equal(1, Assert.Single(factory.Created).Disposals);
        Assert.False(rig.Recorder.Snapshot().Flows.Running);
    }

    private sealed class Factory : IFlowSinkFactory
    {
        public List<RecordingSink> Created { get; } = [];

        public string Description => "test sink";

        public ValueTask<IFlowSink> CreateAsync(IPluginContext context, CancellationToken cancellationToken)
        {
            var sink = new RecordingSink();
            Created.Add(sink);
            return ValueTask.FromResult<IFlowSink>(sink);
        }
    }
}
