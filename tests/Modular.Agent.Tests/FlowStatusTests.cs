using System.Collections.Immutable;
using System.Text.Json;
using Modular.Abstractions.Flows;
using Modular.Agent.Cli;
using Modular.Agent.Status;
using Modular.Core.Status;

namespace Modular.Agent.Tests;

/// <summary>Flow logging in `status`, `status -d` and the status JSON: on with its sinks' counters, or why not.</summary>
public sealed class FlowStatusTests
{
    private static readonly DateTimeOffset At = new(2026, 12, 6, 12, 0, 0, TimeSpan.Zero);

    private static AgentStatus Status(bool netflow, FlowStatus flows, IReadOnlyDictionary<string, string>? unavailable = null) => new(
        "100.64.0.1",
        new string('a', 43) + "=",
        new InterfaceStatus("mdt0", "userspace", 51820, 1280),
        new FeatureStatus(false, "15m", [], false, "auto", false, false, netflow)
        {
            NetflowSource = "account",
            Unavailable = (unavailable ?? new Dictionary<string, string>()).ToImmutableSortedDictionary(StringComparer.Ordinal),
        },
        new ServiceStatus("https://m", true, null),
        new ServiceStatus("https://s", true, null),
        [],
        [])
    {
        Flows = flows,
    };

    private static readonly FlowStatus Running = new(true, [
        new FlowSinkStatus("netflow", new FlowSinkCounters(12, 10, 9, 1, 4, "server unreachable")),
        new FlowSinkStatus("jsonlines", null),
    ]);

    [Fact]
    public void The_json_carries_the_running_state_and_each_sinks_counters_by_design_names()
    {
        var flows = JsonDocument.Parse(StatusJson.Serialize(Status(true, Running))).RootElement.GetProperty("flows");

        Assert.True(flows.GetProperty("running").GetBoolean());
        var netflow = flows.GetProperty("sinks")[0];
        Assert.Equal("netflow", netflow.GetProperty("name").GetString());
        var counters = netflow.GetProperty("counters");
        Assert.Equal(
            ["recorded", "sent", "acknowledged", "dropped", "exported", "last_error"],
            counters.EnumerateObject().Select(p => p.Name));
        Assert.Equal(12, counters.GetProperty("recorded").GetInt64());
        Assert.Equal(9, counters.GetProperty("acknowledged").GetInt64());
        Assert.Equal("server unreachable", counters.GetProperty("last_error").GetString());
        Assert.Equal(JsonValueKind.Null, flows.GetProperty("sinks")[1].GetProperty("counters").ValueKind);
    }

    [Fact]
    public void Flows_survive_the_trip_across_the_daemon_socket()
    {
        var status = Status(true, Running);

        var back = StatusMapping.FromReply(StatusMapping.ToReply(status, includePeers: false));

        Assert.Equal(StatusJson.Serialize(status), StatusJson.Serialize(back));
    }

    [Fact]
    public void Status_shows_flow_logging_on_with_the_summed_counts_and_status_d_each_sink()
    {
        var status = Status(true, Running);

        var summary = StatusText.Format(status, 0, 0, detail: false, At);
        Assert.Contains("Flow logging:        on, to netflow, jsonlines: 12 recorded, 10 sent, 9 acknowledged, 1 dropped, 4 exported; error: server unreachable\n", summary, StringComparison.Ordinal);
        Assert.DoesNotContain("Sink netflow", summary, StringComparison.Ordinal);

        var detail = StatusText.Format(status, 0, 0, detail: true, At);
        Assert.Contains("  Sink netflow:        12 recorded, 10 sent, 9 acknowledged, 1 dropped, 4 exported; error: server unreachable\n", detail, StringComparison.Ordinal);
        Assert.Contains("  Sink jsonlines:      no counters (the sink does not report them)\n", detail, StringComparison.Ordinal);
    }

    [Fact]
    public void On_with_no_traffic_yet_shows_on_with_zero_counts()
    {
        var idle = new FlowStatus(true, [new FlowSinkStatus("netflow", new FlowSinkCounters(0, 0, 0, 0, 0, null))]);

        var text = StatusText.Format(Status(true, idle), 0, 0, detail: false, At);

        Assert.Contains("Flow logging:        on, to netflow: 0 recorded, 0 sent, 0 acknowledged, 0 dropped, 0 exported\n", text, StringComparison.Ordinal);
    }

    [Fact]
    public void Requested_by_the_account_but_not_available_says_so_once_not_twice()
    {
        var why = "requested by the account, not available: no flow-sink plugin named \"netflow\" is loaded (available: (none))";
        var status = Status(false, FlowStatus.Off, new Dictionary<string, string> { ["netflow"] = why });

        var text = StatusText.Format(status, 0, 0, detail: true, At);

        Assert.Contains($"Flow logging:        {why}\n", text, StringComparison.Ordinal);
        Assert.Equal(why, JsonDocument.Parse(StatusJson.Serialize(status)).RootElement.GetProperty("features").GetProperty("unavailable").GetProperty("netflow").GetString());
    }

    [Fact]
    public void Off_shows_off_even_while_sinks_created_earlier_in_the_run_remain()
    {
        var text = StatusText.Format(Status(false, Running with { Running = false }), 0, 0, detail: true, At);

        Assert.Contains("Flow logging:        off\n", text, StringComparison.Ordinal);
        Assert.DoesNotContain("Sink netflow", text, StringComparison.Ordinal);
    }
}
