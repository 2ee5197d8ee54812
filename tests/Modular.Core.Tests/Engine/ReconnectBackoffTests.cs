using System.Globalization;
using System.Text.RegularExpressions;
using Grpc.Core;
using Modular.Control.Crypto;
using Modular.Testing;

namespace Modular.Core.Tests.Engine;

/// <summary>
/// Issue 17: the management reconnect loop, run on a fake clock against a server whose every stream breaks at once,
/// waits with jittered exponential backoff up to its cap (it never retries in a hot loop, and never waits for ever).
/// </summary>
public sealed partial class ReconnectBackoffTests
{
    [Fact]
    public async Task Management_retries_double_up_to_the_30_s_cap_each_with_a_quarter_jitter()
    {
        using var serverKey = X25519KeyPair.Generate();
        var management = new FakeManagementServer(serverKey)
        {
            AfterMap = (_, _) => new RpcException(new Grpc.Core.Status(StatusCode.Unavailable, "gone")),
        };
        var log = new ListLogger();
        await using var rig = new AgentEngineTests.EngineRig((_, _) => ValueTask.CompletedTask, management: management, logs: new ListLoggerFactory(log));
        using var stop = new CancellationTokenSource();
        var run = rig.RunAsync(stop.Token);

        // The clock moves a second at a time, and only while the loop waits (it said "retrying in about N s"), so
        // a slow machine cannot make a wait look shorter; it can only add a second to one.
        var logins = new List<DateTimeOffset>();
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (logins.Count < 8)
        {
            Assert.True(DateTime.UtcNow < deadline, $"8 logins within 60 s; saw {logins.Count}: {string.Join(", ", Retries(log))}");
            if (management.Count("Login") > logins.Count)
            {
                logins.Add(rig.Time.GetUtcNow());
                continue;
            }

            if (Retries(log).Count < logins.Count)
            {
                await Task.Delay(10); // the attempt is still under way: let it reach its wait
                continue;
            }

            await Task.Delay(30); // the wait has begun (logged just before it)
            rig.Time.Advance(TimeSpan.FromSeconds(1));
            await Task.Delay(20);
        }

        await stop.CancelAsync();
        await run;

        // What the loop meant to wait (before jitter): doubling from 1 s, then the cap.
        Assert.Equal([1, 2, 4, 8, 16, 30, 30], Retries(log).Take(7));
        // What it waited on the clock: each within ±25 % of that (one second of granularity either way).
        var gaps = logins.Zip(logins.Skip(1), (a, b) => (b - a).TotalSeconds).ToList();
        foreach (var (gap, planned) in gaps.Zip(Retries(log)))
        {
            Assert.InRange(gap, (planned * 0.75) - 1, (planned * 1.25) + 2);
        }
    }

    /// <summary>The "retrying in about N s" of each management warning, in order.</summary>
    private static List<int> Retries(ListLogger log)
        => [.. log.Warnings.Select(w => RetryIn().Match(w)).Where(m => m.Success && m.Value.Length > 0).Select(m => int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture))];

    [GeneratedRegex(@"^Management: .*; retrying in about ([0-9]+) s$")]
    private static partial Regex RetryIn();
}
