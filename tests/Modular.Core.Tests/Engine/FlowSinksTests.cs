using Microsoft.Extensions.Logging.Abstractions;
using Modular.Abstractions.Flows;
using Modular.Abstractions.Plugins;
using Modular.Core.Config;
using Modular.Core.Engine;
using Modular.Core.Firewall;
using Modular.Core.Tests.Firewall;
using Modular.Testing;

namespace Modular.Core.Tests.Engine;

/// <summary>The engine's creation of the sinks <c>[netflow] sinks</c> names.</summary>
public sealed class FlowSinksTests
{
    private static AgentConfig Config(bool? enabled, params string[] sinks) => new()
    {
        ManagementUrls = [new Uri("https://management.invalid")],
        Netflow = new NetflowConfig { Enabled = new LocalToggle(Config: enabled), Sinks = sinks.Length == 0 ? NetflowConfig.DefaultSinks : sinks },
        PluginSettings = new Dictionary<string, IReadOnlyDictionary<string, object?>> { ["netflow"] = new Dictionary<string, object?> { ["capacity"] = 5L } },
    };

    private static IPluginContext ContextFor(AgentConfig config, string name)
        => new EnginePluginContext(config.SettingsFor(name), NullLoggerFactory.Instance, TimeProvider.System, "/nonexistent", new NoServices());

    [Fact]
    public async Task The_default_sink_is_created_with_its_own_plugin_section()
    {
        var config = Config(true);
        var factory = new RecordingFactory();

        var set = await FlowSinks.CreateAsync(config, new Dictionary<string, IFlowSinkFactory> { ["netflow"] = factory }, name => ContextFor(config, name), userspace: true, NullLogger.Instance, CancellationToken.None);

        Assert.Same(Assert.Single(factory.Created), set.Sink);
        Assert.Equal("netflow", Assert.Single(set.Sinks).Name);
        Assert.Null(set.Problem);
        Assert.Equal(5L, Assert.Single(factory.Contexts).Settings["capacity"]);
    }

    [Fact]
    public async Task Several_sinks_each_get_every_event_and_a_missing_one_is_warned_about()
    {
        var config = Config(true, "netflow", "absent", "jsonlines");
        var netflow = new RecordingFactory();
        var jsonLines = new RecordingFactory();
        var log = new ListLogger();

        var set = await FlowSinks.CreateAsync(config, new Dictionary<string, IFlowSinkFactory> { ["netflow"] = netflow, ["jsonlines"] = jsonLines }, name => ContextFor(config, name), userspace: true, log, CancellationToken.None);

        var fanOut = Assert.IsType<FlowSinkFanOut>(set.Sink);
        Assert.Equal(["netflow", "jsonlines"], set.Sinks.Select(s => s.Name));
        var flowEvent = new FlowEvent(Guid.NewGuid(), Guid.NewGuid(), DateTimeOffset.UnixEpoch, FlowEventType.Start, FlowDirection.Egress, 6, System.Net.IPAddress.Loopback, 1, System.Net.IPAddress.Loopback, 2, 0, 0, 0, 0, 1, 40, null, null, null);
        fanOut.Emit(flowEvent);
        Assert.Same(flowEvent, Assert.Single(Assert.Single(netflow.Created).Events));
        Assert.Same(flowEvent, Assert.Single(Assert.Single(jsonLines.Created).Events));
        Assert.Contains(log.Warnings, w => w.Contains("no flow-sink plugin named \"absent\"", StringComparison.Ordinal) && w.Contains("available: jsonlines, netflow", StringComparison.Ordinal));
    }

    [Fact]
    public async Task When_no_named_sink_can_be_created_the_set_says_why_for_each()
    {
        var config = Config(true, "absent", "broken");
        var broken = new RecordingFactory { BeforeCreate = () => throw new IOException("disk full") };

        var set = await FlowSinks.CreateAsync(config, new Dictionary<string, IFlowSinkFactory> { ["broken"] = broken }, name => ContextFor(config, name), userspace: true, NullLogger.Instance, CancellationToken.None);

        Assert.Null(set.Sink);
        Assert.Empty(set.Sinks);
        Assert.Equal("no flow-sink plugin named \"absent\" is loaded (available: broken); the flow sink \"broken\" could not be created: disk full", set.Problem);
    }

    [Fact]
    public async Task A_kernel_interface_gets_its_sinks_too_conntrack_reports_its_flows()
    {
        var config = Config(true);
        var factory = new RecordingFactory();

        var set = await FlowSinks.CreateAsync(config, new Dictionary<string, IFlowSinkFactory> { ["netflow"] = factory }, name => ContextFor(config, name), userspace: false, NullLogger.Instance, CancellationToken.None);

        Assert.NotNull(set.Sink);
        Assert.Null(set.Problem);
        Assert.Same(Assert.Single(factory.Created), set.Sink);
        await set.Sink.DisposeAsync();
    }

    [Fact]
    public async Task Cancelled_midway_the_sinks_already_created_are_closed()
    {
        var config = Config(true, "netflow", "slow");
        var netflow = new RecordingFactory();
        using var stop = new CancellationTokenSource();
        var slow = new RecordingFactory { BeforeCreate = stop.Cancel };

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => FlowSinks.CreateAsync(config, new Dictionary<string, IFlowSinkFactory> { ["netflow"] = netflow, ["slow"] = slow }, name => ContextFor(config, name), userspace: true, NullLogger.Instance, stop.Token));

        Assert.Equal(1, Assert.Single(netflow.Created).Disposals);
        Assert.Empty(slow.Created);
    }

    private sealed class RecordingFactory : IFlowSinkFactory
    {
        public List<RecordingSink> Created { get; } = [];

        public List<IPluginContext> Contexts { get; } = [];

        public Action? BeforeCreate { get; init; }

        public string Description => "test sink";

        public ValueTask<IFlowSink> CreateAsync(IPluginContext context, CancellationToken cancellationToken)
        {
            BeforeCreate?.Invoke();
            cancellationToken.ThrowIfCancellationRequested();
            var sink = new RecordingSink();
            Created.Add(sink);
            Contexts.Add(context);
            return ValueTask.FromResult<IFlowSink>(sink);
        }
    }

    private sealed class NoServices : IServiceProvider
    {
        public object? GetService(Type serviceType) => null;
    }
}
