using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Modular.Abstractions.WireGuard;
using Modular.Core.Lazy;
using Modular.Core.Peers;

namespace Modular.Core.Tests.Lazy;

/// <summary>The wake-up queue between the activity monitor (WireGuard's send path) and the connections.</summary>
public sealed class LazyWakeQueueTests
{
    [Fact]
    public async Task A_wake_queued_while_thousands_of_others_wait_is_not_lost()
    {
        // The queue held 4,096 wakes and dropped the next while its write reported success, so that peer stayed
        // marked "waking" and every later packet for it was ignored: an idle peer that could never wake again.
        var clock = new FakeTimeProvider(DateTimeOffset.Parse("2026-03-01T12:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
        var peer = new RemotePeerInfo(ConnPair.RandomKey(), "b", "100.64.0.3", [IPNetwork.Parse("100.64.0.3/32")], null);
        await using var conn = new PeerConn(peer, new RecordingWgIface(), new AnsweringSignaling(), new ScriptedPaths(), new FakeRelay(), new PeerConnOptions(), clock, NullLogger.Instance);
        using var gate = new SemaphoreSlim(1, 1);
        var monitor = new FakeActivityMonitor();
        await using var policy = new LazyConnectionPolicy(_ => monitor, gate, key => key == peer.PublicKey ? conn : null, clock, NullLogger.Instance);

        await policy.StartAsync(conn, new LazyOptions(true, TimeSpan.FromMinutes(15), []), CancellationToken.None);
        Assert.True(conn.IsParked);

        await gate.WaitAsync(); // the wake loop stalls on its first wake, as it does behind a long map apply
        for (var i = 0; i < 5_000; i++)
        {
            policy.OnPeerActivity(ConnPair.RandomKey(), []);
        }

        policy.OnPeerActivity(peer.PublicKey, []);
        gate.Release();

        await ConnPair.WaitForAsync(() => !conn.IsParked, "the idle peer woken by its traffic");
        Assert.Equal(1, policy.Counters.ByTraffic);
    }
}
