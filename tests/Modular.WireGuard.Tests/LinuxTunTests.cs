using Modular.Testing;
using Modular.WireGuard.Tun;

namespace Modular.WireGuard.Tests;

/// <summary>
/// The TUN against the real kernel: each device is created here and moved into a namespace
/// this test owns (its fd keeps working), so no traffic touches the host's interfaces.
/// </summary>
public class LinuxTunTests
{
    private const int Offset = 16;

    private static LinuxTun CreateIn(NetworkNamespace ns, string address, bool offloads)
    {
        var name = $"mt{Environment.ProcessId % 10000}{Random.Shared.Next(100000)}";
        var tun = LinuxTun.Create(name, 1420, offloads);
        try
        {
            Shell.Run("ip", $"link set dev {name} netns {ns.Name}");
            ns.Exec($"ip addr add {address} dev {name}");
            ns.Exec($"ip link set dev {name} up");
            return tun;
        }
        catch
        {
            tun.Dispose();
            throw;
        }
    }

    /// <summary>Copies every packet one TUN reads into the other, in batches, until disposed.</summary>
    private static Thread Relay(ITun from, ITun to, Action<int> onBatch)
    {
        var thread = new Thread(() =>
        {
            var packets = new byte[from.BatchSize][];
            var sizes = new int[from.BatchSize];
            for (var i = 0; i < packets.Length; i++)
            {
                packets[i] = new byte[Offset + Conn.PacketBuffers.MaxSegmentSize];
            }

            try
            {
                while (true)
                {
                    var n = from.Read(packets, sizes, Offset);
                    onBatch(n);
                    to.Write(packets, sizes, Offset, n);
                }
            }
            catch (ObjectDisposedException)
            {
            }
            catch (IOException)
            {
            }
        }) { IsBackground = true };
        thread.Start();
        return thread;
    }

    [SkippableTheory]
    [InlineData(true)]
    [InlineData(false)]
    public void TcpCrossesTwoTunsRelayedInBatches(bool offloads)
    {
        Prerequisites.RequireRoot();
        Prerequisites.RequireTool("iperf3");
        using var a = NetworkNamespace.Create("tuna");
        using var b = NetworkNamespace.Create("tunb");
        using var tunA = CreateIn(a, "100.64.77.1/24", offloads);
        using var tunB = CreateIn(b, "100.64.77.2/24", offloads);
        Assert.Equal(offloads, tunA.OffloadsEnabled);

        var largestBatch = 0;
        void Track(int n) => InterlockedMax(ref largestBatch, n);
        var ab = Relay(tunA, tunB, Track);
        var ba = Relay(tunB, tunA, Track);
        using var server = b.Start("iperf3 -s -1 -B 100.64.77.2");
        b.WaitForTcpListener(5201, TimeSpan.FromSeconds(30));

        // 40 MB of TCP; the kernel verifies every checksum our split/coalesce produced.
        var client = a.TryExec("iperf3 -c 100.64.77.2 -n 40M -J", TimeSpan.FromSeconds(60));

        Assert.True(client.ExitCode == 0, client.Error + client.Output + server.Output);
        Assert.Contains("\"bytes\":", client.Output);
        if (offloads)
        {
            // TSO handed us super-packets: many segments per read.
            Assert.True(largestBatch > 8, $"largest batch {largestBatch}");
        }
        else
        {
            Assert.Equal(1, largestBatch);
        }

        tunA.Dispose();
        tunB.Dispose();
        Assert.True(ab.Join(5000) && ba.Join(5000), "readers unblock on Dispose");

        // The kernel unregisters the device once the last reference to its file is released, which can trail
        // the reader threads' exit by a moment (deferred fput): wait for it, bounded.
        var links = a.Exec("ip -o link");
        for (var i = 0; i < 50 && links.Contains(tunA.Name, StringComparison.Ordinal); i++)
        {
            Thread.Sleep(100);
            links = a.Exec("ip -o link");
        }

        Assert.DoesNotContain(tunA.Name, links);
    }

    [SkippableFact]
    public void PingIsAnsweredThroughTheTun()
    {
        Prerequisites.RequireRoot();
        using var ns = NetworkNamespace.Create("tunp");
        using var tun = CreateIn(ns, "100.64.78.1/24", offloads: true);
        var replies = 0;
        var responder = new Thread(() =>
        {
            var packets = new byte[tun.BatchSize][];
            var sizes = new int[tun.BatchSize];
            for (var i = 0; i < packets.Length; i++)
            {
                packets[i] = new byte[Offset + Conn.PacketBuffers.MaxSegmentSize];
            }

            try
            {
                while (true)
                {
                    var n = tun.Read(packets, sizes, Offset);
                    for (var i = 0; i < n; i++)
                    {
                        var p = packets[i].AsSpan(Offset, sizes[i]);
                        if (p[0] != 0x45 || p[9] != 1 || p[20] != 8)
                        {
                            continue;
                        }

                        // Echo request -> reply: swap addresses, type 0, fix the ICMP checksum.
                        var source = p[12..16].ToArray();
                        p[16..20].CopyTo(p[12..16]);
                        source.CopyTo(p[16..20]);
                        p[20] = 0;
                        p[22] = 0;
                        p[23] = 0;
                        var checksum = LinuxOffloadTests.ReferenceChecksum(p[20..]);
                        p[22] = (byte)(checksum >> 8);
                        p[23] = (byte)checksum;
                        tun.Write([packets[i]], [sizes[i]], Offset, 1);
                        Interlocked.Increment(ref replies);
                    }
                }
            }
            catch (ObjectDisposedException)
            {
            }
        }) { IsBackground = true };
        responder.Start();

        var ping = ns.TryExec("ping -c 3 -i 0.2 -W 2 100.64.78.9", TimeSpan.FromSeconds(20));

        Assert.True(ping.ExitCode == 0, ping.Output + ping.Error);
        Assert.True(replies >= 3);
        tun.Dispose();
        Assert.True(responder.Join(5000));
    }

    [Theory]
    [InlineData("")]
    [InlineData("bad name")]
    [InlineData("a/b")]
    [InlineData("x:1")]
    [InlineData("sixteen-chars-xx")]
    [InlineData("..")]
    [InlineData("wg0 mtu 9000")]
    public void InvalidInterfaceNamesAreRefusedBeforeAnythingIsCreated(string name)
    {
        Assert.Throws<ArgumentException>(() => LinuxTun.Create(name));
    }

    [SkippableFact]
    public void ReadAfterDisposeThrowsObjectDisposed()
    {
        Prerequisites.RequireRoot();
        using var ns = NetworkNamespace.Create("tund");
        var tun = CreateIn(ns, "100.64.79.1/24", offloads: true);
        tun.Dispose();
        Assert.Throws<ObjectDisposedException>(() => tun.Read([new byte[2000]], new int[1], Offset));
    }

    private static void InterlockedMax(ref int target, int value)
    {
        int current;
        while (value > (current = Volatile.Read(ref target)) && Interlocked.CompareExchange(ref target, value, current) != current)
        {
        }
    }
}
