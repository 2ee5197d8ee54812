using Microsoft.Extensions.Logging.Abstractions;
using Modular.Core.Lazy;
using Modular.Testing.WireGuard;
using Modular.WireGuard.Device;
using Xunit.Abstractions;

namespace Modular.Core.Tests.Lazy;

/// <summary>
/// The design's budget: an idle peer costs no socket and under 2 KB. Measured as bytes allocated on this thread
/// per Watch over 10,000 peers — an upper bound of what stays alive, since it also counts the garbage the
/// dictionaries leave when they grow. Allocation counts do not depend on machine speed.
/// </summary>
public sealed class MemoryPerPeerTests(ITestOutputHelper output)
{
    private const int Peers = 10_000;
    private const long BudgetPerPeer = 2048;

    [Fact]
    public async Task An_idle_peer_on_the_bind_hook_costs_under_2_KB()
    {
        using var tun = new InMemoryTun();
        using var device = new WgDevice(tun, new InMemoryNetwork().CreateBind(1), NullLoggerFactory.Instance, TimeProvider.System);
        await using var monitor = new BindHookActivityMonitor(device.BindHook, new RecordingActivityListener(), NullLogger.Instance);

        var perPeer = AllocatedPerWatch(monitor);

        output.WriteLine($"BindHookActivityMonitor (with HookableBind's claim): {perPeer} bytes per watched peer");
        Assert.InRange(perPeer, 1, BudgetPerPeer);
    }

    [Fact]
    public async Task An_idle_peer_on_the_loopback_socket_costs_under_2_KB()
    {
        await using var monitor = new LoopbackActivityMonitor(new RecordingActivityListener(), NullLogger.Instance);

        var perPeer = AllocatedPerWatch(monitor);

        output.WriteLine($"LoopbackActivityMonitor: {perPeer} bytes per watched peer");
        Assert.InRange(perPeer, 1, BudgetPerPeer);
    }

    private static long AllocatedPerWatch(IActivityMonitor monitor)
    {
        var keys = Enumerable.Range(0, Peers).Select(TestKeys.Peer).ToArray();
        var before = GC.GetAllocatedBytesForCurrentThread();
        foreach (var key in keys)
        {
            monitor.Watch(key);
        }

        var after = GC.GetAllocatedBytesForCurrentThread();
        Assert.Equal(Peers, monitor.Count);
        return (after - before) / Peers;
    }
}
