using Microsoft.Extensions.Logging.Abstractions;
using Modular.Abstractions.Flows;
using Modular.Abstractions.Plugins;
using Modular.Control.Management;
using Modular.Core.Config;
using Modular.Core.Engine;
using Modular.Core.Firewall;
using Modular.Core.Status;
using Modular.Testing;

namespace Modular.Core.Tests.Engine;

/// <summary>
/// Flow logging at run time: the local key overrides the account's <c>[account.flows]</c> either way, absent locally the
/// account decides; sinks are created on the first "on", kept while off, disposed at stop; a run that cannot create
/// them says why, once; <c>collect_dns</c> and <c>collect_exit_node</c> follow the same rule each.
/// </summary>
public sealed class FlowSwitchTests
{
    private readonly CountedFactory _factory = new();
    private readonly ListLogger _log = new();

    private static AgentConfig Config(string toml = "", string firewall = "")
        => AgentConfigLoader.Parse($"management_url = \"https://m.example\"\n{firewall}\n[netflow]\n{toml}\n", "agent.toml", new Dictionary<string, string?>(), new AgentConfigOverrides());

    private static NetworkMap Map(bool enabled, bool collectDns = false, bool collectExitNode = false)
        => new() { Settings = new AccountSettings { Flows = new FlowSettings { Enabled = enabled, CollectDns = collectDns, CollectExitNode = collectExitNode } } };

    private FlowSwitch Switch(AgentConfig config, bool userspace = true, IReadOnlyDictionary<string, IFlowSinkFactory>? factories = null)
        => new(config, factories ?? new Dictionary<string, IFlowSinkFactory> { ["netflow"] = _factory }, _ => new EnginePluginContext(config.SettingsFor("netflow"), NullLoggerFactory.Instance, TimeProvider.System, "/nonexistent", new NoServices()), userspace, _log);

    [Theory]
    [InlineData("enabled = true", true, true)]
    [InlineData("enabled = true", false, true)]
    [InlineData("enabled = false", true, false)]
    [InlineData("enabled = false", false, false)]
    [InlineData("", true, true)]
    [InlineData("", false, false)]
    public async Task The_local_key_overrides_the_account_either_way_and_absent_the_account_decides(string local, bool account, bool expected)
    {
        await using var flows = Switch(Config(local));

        await flows.ApplyAsync(Map(account), CancellationToken.None);

        Assert.Equal(expected, flows.Sink.Active);
        Assert.Equal(expected ? 1 : 0, _factory.Created.Count);
        Assert.Equal(expected, flows.Status().Running);
        Assert.Empty(flows.NotAvailable);
        var status = FeatureStatusBuilder.Build(Config(local), null, new AccountFeatures(Flows: account), flows.NotAvailable);
        Assert.Equal(expected, status.Netflow);
        Assert.Equal(local.Length > 0 ? "config" : "account", status.NetflowSource);
        Assert.False(status.Unavailable.ContainsKey("netflow"));
    }

    [Theory]
    [InlineData("enabled = true", true)]
    [InlineData("enabled = false", false)]
    [InlineData("", false)]
    public async Task Before_the_first_map_only_the_local_key_counts(string local, bool expected)
    {
        await using var flows = Switch(Config(local));

        await flows.ApplyAsync(null, CancellationToken.None);

        Assert.Equal(expected, flows.Sink.Active);
        Assert.Equal(expected ? 1 : 0, _factory.Created.Count);
    }

    [Fact]
    public async Task Sinks_are_created_on_the_first_on_kept_while_the_account_turns_it_off_and_disposed_at_stop()
    {
        var flows = Switch(Config());
        await flows.ApplyAsync(Map(false), CancellationToken.None);
        Assert.Empty(_factory.Created);

        await flows.ApplyAsync(Map(true), CancellationToken.None);
        var sink = Assert.Single(_factory.Created);
        Assert.Same(sink, flows.Sink.Target);

        await flows.ApplyAsync(Map(false), CancellationToken.None);
        Assert.False(flows.Sink.Active);
        Assert.False(flows.Status().Running);
        Assert.Equal(0, sink.Disposals);

        await flows.ApplyAsync(Map(true), CancellationToken.None);
        Assert.True(flows.Sink.Active);
        Assert.Single(_factory.Created); // the same sinks again, not new ones

        await flows.DisposeAsync();
        await flows.DisposeAsync();
        Assert.Equal(1, sink.Disposals);
        Assert.False(flows.Sink.Active);
        Assert.Null(flows.Sink.Target);
        await flows.ApplyAsync(Map(true), CancellationToken.None); // a map racing the stop changes nothing
        Assert.Single(_factory.Created);
        Assert.False(flows.Sink.Active);
    }

    [Fact]
    public async Task Account_on_with_the_plugin_missing_runs_warns_once_and_status_says_requested_by_the_account_not_available()
    {
        var config = Config();
        await using var flows = Switch(config, factories: new Dictionary<string, IFlowSinkFactory>());

        await flows.ApplyAsync(Map(true), CancellationToken.None);
        await flows.ApplyAsync(Map(true), CancellationToken.None);

        Assert.False(flows.Sink.Active);
        var why = Assert.Single(flows.NotAvailable, pair => pair.Key == "netflow").Value;
        Assert.Equal("no flow-sink plugin named \"netflow\" is loaded (available: (none))", why);
        Assert.Single(_log.Warnings, w => w.Contains("not available", StringComparison.Ordinal));
        var status = FeatureStatusBuilder.Build(config, null, new AccountFeatures(Flows: true), flows.NotAvailable);
        Assert.False(status.Netflow);
        Assert.Equal($"requested by the account, not available: {why}", status.Unavailable["netflow"]);

        // The account turning it off again: nothing is asked for, so nothing is unavailable.
        await flows.ApplyAsync(Map(false), CancellationToken.None);
        Assert.Empty(flows.NotAvailable);
    }

    [Fact]
    public async Task Asked_for_locally_with_the_firewall_off_it_is_not_available_with_why_in_kernel_mode_conntrack_reports()
    {
        // Kernel mode has sinks too: conntrack reports its flows (KernelFlowSource).
        await using var kernel = Switch(Config("enabled = true"), userspace: false);
        await kernel.ApplyAsync(null, CancellationToken.None);
        Assert.True(kernel.Sink.Active);
        Assert.Empty(kernel.NotAvailable);
        var status = FeatureStatusBuilder.Build(Config("enabled = true"), null, AccountFeatures.None, kernel.NotAvailable);
        Assert.True(status.Netflow);
        Assert.Single(_factory.Created);

        var noFirewall = Config("enabled = true", "[firewall]\nenabled = false");
        await using var off = Switch(noFirewall);
        await off.ApplyAsync(null, CancellationToken.None);
        Assert.Contains("the firewall's connection tracking, which is off", off.NotAvailable["netflow"], StringComparison.Ordinal);
        Assert.Single(_factory.Created);
    }

    [Theory]
    [InlineData("", true, true, true, true)]                                                    // absent: the account's
    [InlineData("", false, false, false, false)]
    [InlineData("collect_dns = false\ncollect_exit_node = false", true, true, false, false)]    // local false wins
    [InlineData("collect_dns = true\ncollect_exit_node = true", false, false, true, true)]      // local true wins
    [InlineData("collect_dns = true", false, true, true, true)]                                 // each key on its own
    public async Task Collect_dns_and_collect_exit_node_follow_the_same_rule_each(string local, bool accountDns, bool accountExit, bool dns, bool exit)
    {
        await using var flows = Switch(Config("enabled = true\n" + local));

        await flows.ApplyAsync(Map(true, accountDns, accountExit), CancellationToken.None);

        Assert.Equal(new FlowCollection(true, dns, exit), flows.Sink.Collection);
    }

    [Fact]
    public async Task Status_shows_the_counters_of_sinks_that_report_them()
    {
        await using var flows = Switch(Config("enabled = true"));
        await flows.ApplyAsync(null, CancellationToken.None);
        _factory.Created[0].Counters = new FlowSinkCounters(5, 4, 3, 1, 2, "server unreachable");

        var status = flows.Status();

        Assert.True(status.Running);
        var sink = Assert.Single(status.Sinks);
        Assert.Equal("netflow", sink.Name);
        Assert.Equal(new FlowSinkCounters(5, 4, 3, 1, 2, "server unreachable"), sink.Counters);
    }

    private sealed class CountedSink : IFlowSink, IFlowSinkStatus
    {
        private int _disposals;

        public int Disposals => Volatile.Read(ref _disposals);

        public FlowSinkCounters Counters { get; set; }

        public void Emit(FlowEvent flowEvent)
        {
        }

        public ValueTask DisposeAsync()
        {
            Interlocked.Increment(ref _disposals);
            return ValueTask.CompletedTask;
        }
    }

    private sealed class CountedFactory : IFlowSinkFactory
    {
        public List<CountedSink> Created { get; } = [];

        public string Description => "test sink";

        public ValueTask<IFlowSink> CreateAsync(IPluginContext context, CancellationToken cancellationToken)
        {
            var sink = new CountedSink();
            Created.Add(sink);
            return ValueTask.FromResult<IFlowSink>(sink);
        }
    }

    private sealed class NoServices : IServiceProvider
    {
        public object? GetService(Type serviceType) => null;
    }
}
