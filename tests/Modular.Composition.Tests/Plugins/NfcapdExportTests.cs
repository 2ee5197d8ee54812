using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Modular.Abstractions.Flows;
using Modular.Plugins.Netflow;
using Modular.Testing;

namespace Modular.Composition.Tests.Plugins;

/// <summary>
/// The netflow plugin's IPFIX export read by a real collector: Debian's nfcapd (package nfdump) listening on a loopback
/// port into a temporary directory, and <c>nfdump -r</c> printing what it stored.
/// </summary>
public sealed class NfcapdExportTests
{
    [SkippableFact]
    public async Task Nfcapd_stores_the_exported_flows_and_nfdump_prints_their_addresses_ports_and_bytes()
    {
        Prerequisites.RequireTool("nfcapd");
        Prerequisites.RequireTool("nfdump");
        var directory = Directory.CreateTempSubdirectory("modular-nfcapd-");
        try
        {
            var port = FreeUdpPort();
            using var nfcapd = Shell.Start(Prerequisites.FindOnPath("nfcapd")!, $"-w {directory.FullName} -p {port} -b 127.0.0.1");
            await Bounded.UntilAsync(() => ReceiveQueue(port) is not null || nfcapd.Process.HasExited, "nfcapd to listen");
            Assert.False(nfcapd.Process.HasExited, $"nfcapd exited: {nfcapd.Output}");

            var now = DateTimeOffset.FromUnixTimeSeconds(DateTimeOffset.UtcNow.ToUnixTimeSeconds());
            var tcp = Guid.NewGuid();
            var settings = new Dictionary<string, object?> { ["ipfix_collector"] = $"127.0.0.1:{port}" };
            await using (var sink = (NetflowSink)await new NetflowSinkFactory().CreateAsync(new FakePluginContext(settings), CancellationToken.None))
            {
                Assert.True(sink.Exports);
                sink.Emit(Flow(tcp, now.AddSeconds(-5), FlowEventType.Start, FlowDirection.Egress, 6, "100.64.0.1", 40000, "100.64.0.2", 443, 0, 0, 1, 60));
                sink.Emit(Flow(tcp, now, FlowEventType.End, FlowDirection.Egress, 6, "100.64.0.1", 40000, "100.64.0.2", 443, 8, 5000, 10, 1000));
                sink.Emit(Flow(Guid.NewGuid(), now, FlowEventType.End, FlowDirection.Ingress, 17, "fd00::2", 5353, "fd00::1", 53, 3, 300, 2, 200));
                sink.Emit(Flow(Guid.NewGuid(), now, FlowEventType.End, FlowDirection.Egress, 1, "100.64.0.1", 0, "100.64.0.3", 0, 4, 336, 4, 336, icmpType: 8));
                await Bounded.UntilAsync(() => sink.Counters.Exported == 3, "the three ended flows to be exported");
                Assert.Null(sink.Counters.LastError);
            }

            // Every datagram read by nfcapd, then SIGTERM: it writes its file and exits.
            await Bounded.UntilAsync(() => ReceiveQueue(port) == 0, "nfcapd to read every datagram");
            Shell.Run("kill", $"-TERM {nfcapd.Process.Id}");
            await nfcapd.Process.WaitForExitAsync(Bounded.Wait);
            var file = Assert.Single(directory.GetFiles("nfcapd.2*"));

            var rows = Csv(Shell.Run(Prerequisites.FindOnPath("nfdump")!, $"-r {file.FullName} -o csv"));
            Assert.Equal(
                new[]
                {
                    "100.64.0.1 100.64.0.2 40000 443 TCP 10 1000 5.000", // ours out, over the 5 s since its Start
                    "100.64.0.1 100.64.0.3 0 2048 ICMP 4 336 0.000", // echo request (type 8 code 0 in the port column)
                    "100.64.0.2 100.64.0.1 443 40000 TCP 8 5000 5.000", // the answers
                    "100.64.0.3 100.64.0.1 0 0 ICMP 4 336 0.000", // echo reply
                    "fd00::1 fd00::2 53 5353 UDP 2 200 0.000",
                    "fd00::2 fd00::1 5353 53 UDP 3 300 0.000",
                },
                rows.Select(r => string.Join(' ', r["sa"], r["da"], r["sp"], r["dp"], r["pr"], r["ipkt"], r["ibyt"], r["td"])).Order(StringComparer.Ordinal));
        }
        finally
        {
            directory.Delete(recursive: true);
        }
    }

    private static FlowEvent Flow(
        Guid flowId, DateTimeOffset at, FlowEventType type, FlowDirection direction, byte protocol, string source, ushort sourcePort,
        string destination, ushort destinationPort, ulong rxPackets, ulong rxBytes, ulong txPackets, ulong txBytes, byte icmpType = 0)
        => new(Guid.NewGuid(), flowId, at, type, direction, protocol, IPAddress.Parse(source), sourcePort, IPAddress.Parse(destination),
            destinationPort, icmpType, 0, rxPackets, rxBytes, txPackets, txBytes, null, null, null);

    /// <summary>nfdump's CSV rows as column name → value (the header line names them; the summary after a blank line is left out).</summary>
    private static List<Dictionary<string, string>> Csv(string output)
    {
        var lines = output.Split('\n', StringSplitOptions.TrimEntries);
        var headerAt = Array.FindIndex(lines, l => l.StartsWith("ts,", StringComparison.Ordinal));
        Assert.True(headerAt >= 0, $"no CSV header in nfdump's output: {output}");
        var header = lines[headerAt].Split(',');
        return lines
            .Skip(headerAt + 1)
            .TakeWhile(l => l.Length > 0 && !l.StartsWith("Summary", StringComparison.Ordinal))
            .Select(l => header.Zip(l.Split(','), (name, value) => (name, value: value.Trim())).ToDictionary(p => p.name, p => p.value))
            .ToList();
    }

    private static int FreeUdpPort()
    {
        using var probe = new UdpClient(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)probe.Client.LocalEndPoint!).Port;
    }

    /// <summary>The receive queue (bytes) of the UDP socket bound to 127.0.0.1:<paramref name="port"/>, from /proc/net/udp; null when none is.</summary>
    private static long? ReceiveQueue(int port)
    {
        var local = $"0100007F:{port:X4}";
        foreach (var line in File.ReadLines("/proc/net/udp").Skip(1))
        {
            var fields = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (fields.Length > 4 && fields[1] == local)
            {
                return long.Parse(fields[4].Split(':')[1], NumberStyles.HexNumber, CultureInfo.InvariantCulture);
            }
        }

        return null;
    }
}
