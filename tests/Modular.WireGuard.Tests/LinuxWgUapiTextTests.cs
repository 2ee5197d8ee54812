using System.Net;
using Modular.Abstractions.WireGuard;
using Modular.WireGuard.Interface;

namespace Modular.WireGuard.Tests;

/// <summary>The UAPI text the external-device drivers write and parse.</summary>
public class LinuxWgUapiTextTests
{
    private static readonly WgKey Peer = new(Enumerable.Repeat((byte)0xAB, 32).ToArray());

    [Fact]
    public void PeerConfigurationIsWrittenAsUapiLines()
    {
        var psk = new WgKey(Enumerable.Repeat((byte)1, 32).ToArray());
        var text = WgUapiText.SetPeer(new WgPeerConfig(Peer, [IPNetwork.Parse("100.64.0.2/32")], IPEndPoint.Parse("[fd00::2]:51820"), psk, TimeSpan.FromSeconds(25)));

        Assert.Equal(
            $"public_key={Peer.ToHex()}\npreshared_key={psk.ToHex()}\nendpoint=[fd00::2]:51820\npersistent_keepalive_interval=25\nreplace_allowed_ips=true\nallowed_ip=100.64.0.2/32\n",
            text);
        Assert.Equal($"public_key={Peer.ToHex()}\nremove=true\n", WgUapiText.RemovePeer(Peer));
        Assert.Equal("198.18.0.1:9", WgUapiText.FormatEndpoint(new IPEndPoint(IPAddress.Parse("198.18.0.1").MapToIPv6(), 9)));
        Assert.Equal("WgDeviceUpdate (contents hidden)", WgDeviceUpdate.Device(psk, 1).ToString());
    }

    [Fact]
    public void StatsAreParsedAndGarbageIsSkipped()
    {
        var other = new WgKey(Enumerable.Repeat((byte)0xCD, 32).ToArray());
        var body = $"private_key={new string('0', 64)}\nlisten_port=51820\n" +
                   $"public_key={Peer.ToHex()}\nendpoint=198.18.0.2:51820\nlast_handshake_time_sec=1700000000\nlast_handshake_time_nsec=500\nrx_bytes=10\ntx_bytes=20\n" +
                   $"public_key={other.ToHex()}\nrx_bytes=notanumber\nno-equals-sign\nlast_handshake_time_sec=0\n" +
                   "public_key=zz\nrx_bytes=5\n";

        var stats = WgUapiText.ParseStats(body);

        Assert.Equal(2, stats.Count);
        Assert.Equal(DateTimeOffset.FromUnixTimeSeconds(1_700_000_000).AddTicks(5), stats[Peer].LastHandshake);
        Assert.Equal((10, 20), (stats[Peer].RxBytes, stats[Peer].TxBytes));
        Assert.Equal(IPEndPoint.Parse("198.18.0.2:51820"), stats[Peer].Endpoint);
        Assert.Null(stats[other].LastHandshake);
        Assert.Equal(0, stats[other].RxBytes);
    }
}
