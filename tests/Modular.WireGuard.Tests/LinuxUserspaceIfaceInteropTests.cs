using System.Collections.Concurrent;
using System.Net;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging.Abstractions;
using Modular.Abstractions.WireGuard;
using Modular.Testing;
using Modular.WireGuard.Interface;
using Modular.WireGuard.Kernel;

namespace Modular.WireGuard.Tests;

/// <summary>
/// UserspaceWgIface (TUN + UDP bind + WgDevice in this process) against wireguard-go. The
/// interface is driven from a dedicated thread that has entered the test's network namespace
/// (namespaces are per thread on Linux), so its TUN, socket and `ip` commands all live there.
/// </summary>
public sealed class LinuxUserspaceIfaceInteropTests
{
    private const int CloneNewNet = 0x40000000;

    [DllImport("libc", SetLastError = true)]
    private static extern int setns(int fd, int nstype);

    /// <summary>Runs work items on one thread inside a network namespace.</summary>
    private sealed class NamespaceThread : IDisposable
    {
        private readonly BlockingCollection<Action> _work = [];
        private readonly Thread _thread;

        public NamespaceThread(string ns)
        {
            var entered = new TaskCompletionSource();
            _thread = new Thread(() =>
            {
                using (var handle = File.OpenHandle($"/var/run/netns/{ns}"))
                {
                    if (setns((int)handle.DangerousGetHandle(), CloneNewNet) != 0)
                    {
                        entered.SetException(new IOException($"setns failed: {Marshal.GetLastPInvokeError()}"));
                        return;
                    }
                }

                entered.SetResult();
                foreach (var work in _work.GetConsumingEnumerable())
                {
                    work();
                }
            }) { IsBackground = true };
            _thread.Start();
            entered.Task.Wait();
        }

        public T Run<T>(Func<ValueTask<T>> work)
        {
            var done = new TaskCompletionSource<T>();
            _work.Add(() =>
            {
                try
                {
                    done.SetResult(work().AsTask().GetAwaiter().GetResult());
                }
                catch (Exception e)
                {
                    done.SetException(e);
                }
            });
            return done.Task.WaitAsync(TimeSpan.FromSeconds(60)).GetAwaiter().GetResult();
        }

        public void Run(Func<ValueTask> work) => Run(async () =>
        {
            await work();
            return 0;
        });

        public void Dispose()
        {
            _work.CompleteAdding();
            _thread.Join(10_000);
        }
    }

    [SkippableFact]
    public void UserspaceIfaceInteroperatesWithWireGuardGo()
    {
        Prerequisites.RequireRoot();
        Prerequisites.RequireTool("wg");
        Prerequisites.RequireTool("wireguard-go");
        var subnet = (Environment.ProcessId % 200) + 30;
        using var nsA = NetworkNamespace.Create("ua");
        using var nsB = NetworkNamespace.Create("ub");
        nsA.Link(nsB, $"198.18.{subnet}.1/24", $"198.18.{subnet}.2/24");
        var referenceIface = $"urb{Environment.ProcessId % 10000}";
        using var reference = nsB.Start($"wireguard-go -f {referenceIface}", new Dictionary<string, string> { [WireGuardGoProcess.PreferUserspaceVariable] = "1" });
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (!File.Exists($"/var/run/wireguard/{referenceIface}.sock") || nsB.TryExec($"ip link show {referenceIface}").ExitCode != 0)
        {
            Assert.True(DateTime.UtcNow < deadline, reference.Output);
            Thread.Sleep(50);
        }

        var referencePrivate = WgKeys.GeneratePrivateKey();
        var referencePublic = WgKeys.PublicKeyOf(referencePrivate);
        var options = new WgIfaceOptions($"ura{Environment.ProcessId % 10000}", WgKeys.GeneratePrivateKey(), IPAddress.Parse($"100.64.{subnet}.1"), 24, Mtu: 1420);
        var client = new Kernel.UapiClient($"/var/run/wireguard/{referenceIface}.sock");
        client.SetAsync(WgUapiText.SetDevice(referencePrivate, 51820)
            + WgUapiText.SetPeer(new WgPeerConfig(WgKeys.PublicKeyOf(options.PrivateKey), [IPNetwork.Parse($"100.64.{subnet}.1/32")])), CancellationToken.None).GetAwaiter().GetResult();
        nsB.Exec($"ip addr add 100.64.{subnet}.2/24 dev {referenceIface}");
        nsB.Exec($"ip link set {referenceIface} mtu 1420 up");

        using var thread = new NamespaceThread(nsA.Name);
        var iface = new UserspaceWgIface(options, NullLoggerFactory.Instance, TimeProvider.System);
        try
        {
            thread.Run(() => iface.CreateAsync(CancellationToken.None));
            thread.Run(() => iface.UpAsync(CancellationToken.None));
            thread.Run(() => iface.SetPeerAsync(new WgPeerConfig(referencePublic, [IPNetwork.Parse($"100.64.{subnet}.2/32")], IPEndPoint.Parse($"198.18.{subnet}.2:51820")), CancellationToken.None));

            var ping = nsA.TryExec($"ping -c 3 -i 0.2 -W 3 100.64.{subnet}.2", TimeSpan.FromSeconds(30));
            var addresses = nsA.TryExec($"ip addr show dev {options.Name}");

            Assert.True(ping.ExitCode == 0, ping.Output + reference.Output);
            Assert.Contains($"inet 100.64.{subnet}.1/24", addresses.Output);
            Assert.Equal(WgInterfaceMode.Userspace, iface.Mode);
            Assert.NotNull(iface.BindHook);
            Assert.Equal(51820, iface.ListenPort);
            var stats = thread.Run(() => iface.GetStatsAsync(CancellationToken.None));
            Assert.NotNull(stats[referencePublic].LastHandshake);
            Assert.True(stats[referencePublic].RxBytes > 0 && stats[referencePublic].TxBytes > 0);
        }
        finally
        {
            thread.Run(() => iface.DisposeAsync());
            File.Delete($"/var/run/wireguard/{referenceIface}.sock");
        }

        Assert.NotEqual(0, nsA.TryExec($"ip link show {options.Name}").ExitCode);
    }
}
