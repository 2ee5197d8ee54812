using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Modular.Abstractions.WireGuard;
using Modular.Testing.WireGuard;
using Modular.WireGuard.Device;

namespace Modular.WireGuard.Tests;

/// <summary>The cross-platform UAPI text: what `wg set` sends and `wg show`/`wg showconf` read.</summary>
public sealed class UapiTests : IDisposable
{
    private readonly InMemoryNetwork _network = new();
    private readonly WgDevice _device;
    private readonly WgKey _private = DevicePair.NewPrivateKey();
    private readonly WgKey _peer1 = new(DerivePublic(DevicePair.NewPrivateKey()));
    private readonly WgKey _peer2 = new(DerivePublic(DevicePair.NewPrivateKey()));

    public UapiTests()
    {
        _device = new WgDevice(new InMemoryTun(), _network.CreateBind(1), NullLoggerFactory.Instance, new FakeTimeProvider(DateTimeOffset.UnixEpoch.AddDays(20000)));
    }

    private static byte[] DerivePublic(WgKey privateKey)
    {
        var raw = privateKey.ToArray();
        var pub = new byte[32];
        Crypto.Curve25519.DerivePublicKey(raw, pub);
        return pub;
    }

    private int Set(string body) => _device.IpcSet(new StringReader(body));

    private string Get()
    {
        var writer = new StringWriter();
        _device.IpcGet(writer);
        return writer.ToString();
    }

    [Fact]
    public void Set_then_get_prints_the_configuration()
    {
        var psk = new string('a', 64);
        Assert.Equal(0, Set($"""
            private_key={_private.ToHex()}
            listen_port=51820
            fwmark=4660
            public_key={_peer1.ToHex()}
            preshared_key={psk}
            endpoint=198.18.0.2:51821
            persistent_keepalive_interval=25
            replace_allowed_ips=true
            allowed_ip=100.64.0.2/32
            allowed_ip=10.10.0.0/16
            public_key={_peer2.ToHex()}
            endpoint=[fd00::2]:4000
            allowed_ip=fd00::/64
            protocol_version=1

            """.Replace("\r", "", StringComparison.Ordinal)));

        var expected = $"""
            private_key={_private.ToHex()}
            listen_port=51820
            fwmark=4660
            public_key={_peer1.ToHex()}
            preshared_key={psk}
            protocol_version=1
            endpoint=198.18.0.2:51821
            last_handshake_time_sec=0
            last_handshake_time_nsec=0
            tx_bytes=0
            rx_bytes=0
            persistent_keepalive_interval=25
            allowed_ip=10.10.0.0/16
            allowed_ip=100.64.0.2/32
            public_key={_peer2.ToHex()}
            preshared_key={new string('0', 64)}
            protocol_version=1
            endpoint=[fd00::2]:4000
            last_handshake_time_sec=0
            last_handshake_time_nsec=0
            tx_bytes=0
            rx_bytes=0
            persistent_keepalive_interval=0
            allowed_ip=fd00::/64

            """.Replace("\r", "", StringComparison.Ordinal);
        var actual = Get();
        Assert.Equal(SortPeers(expected), SortPeers(actual));
        Assert.Equal(new WgKey(DerivePublic(_private)), _device.PublicKey);
    }

    [Fact]
    public void Get_output_applied_to_a_fresh_device_reproduces_it()
    {
        Assert.Equal(0, Set($"private_key={_private.ToHex()}\nlisten_port=1234\npublic_key={_peer1.ToHex()}\nendpoint=198.18.0.9:9\nallowed_ip=100.64.0.0/10\n"));
        var first = Get();
        using var copy = new WgDevice(new InMemoryTun(), _network.CreateBind(2), NullLoggerFactory.Instance, TimeProvider.System);
        // What `wg showconf` keeps: the configuration, not the counters (which set refuses).
        var config = string.Join('\n', first.Split('\n').Where(line => !line.StartsWith("last_handshake", StringComparison.Ordinal) && !line.StartsWith("tx_bytes", StringComparison.Ordinal) && !line.StartsWith("rx_bytes", StringComparison.Ordinal)));
        Assert.Equal(WgDevice.Errno.EINVAL, copy.IpcSet(new StringReader($"public_key={_peer2.ToHex()}\ntx_bytes=5\n")));
        copy.RemoveAllPeers();
        Assert.Equal(0, copy.IpcSet(new StringReader(config)));
        var writer = new StringWriter();
        copy.IpcGet(writer);
        Assert.Equal(first, writer.ToString());
    }

    [Fact]
    public void Typed_configuration_shows_in_get()
    {
        _device.SetPrivateKey(_private);
        _device.SetPeer(new WgPeerConfig(_peer1, [IPNetwork.Parse("100.64.0.7/32")], IPEndPoint.Parse("198.18.0.7:51820"), null, TimeSpan.FromSeconds(15)));
        var text = Get();
        Assert.Contains($"public_key={_peer1.ToHex()}\n", text, StringComparison.Ordinal);
        Assert.Contains("allowed_ip=100.64.0.7/32\n", text, StringComparison.Ordinal);
        Assert.Contains("persistent_keepalive_interval=15\n", text, StringComparison.Ordinal);
        Assert.DoesNotContain("listen_port", text, StringComparison.Ordinal);
        Assert.DoesNotContain("fwmark", text, StringComparison.Ordinal);
    }

    [Fact]
    public void Remove_update_only_replace_peers_and_replace_allowed_ips()
    {
        Assert.Equal(0, Set($"public_key={_peer1.ToHex()}\nallowed_ip=10.0.0.0/8\npublic_key={_peer2.ToHex()}\nallowed_ip=10.1.0.0/16\n"));
        Assert.Equal(2, _device.GetPeerStats().Count);

        // update_only does not create an absent peer; its other lines are ignored.
        var absent = new WgKey(DerivePublic(DevicePair.NewPrivateKey()));
        Assert.Equal(0, Set($"public_key={absent.ToHex()}\nupdate_only=true\nallowed_ip=10.2.0.0/16\n"));
        Assert.False(_device.GetPeerStats().ContainsKey(absent));
        Assert.Equal(0, Set($"public_key={_peer1.ToHex()}\nupdate_only=true\nallowed_ip=10.3.0.0/16\n"));
        Assert.Contains(IPNetwork.Parse("10.3.0.0/16"), _device.GetAllowedIps(_peer1));

        Assert.Equal(0, Set($"public_key={_peer1.ToHex()}\nreplace_allowed_ips=true\nallowed_ip=192.0.2.0/24\n"));
        Assert.Equal([IPNetwork.Parse("192.0.2.0/24")], _device.GetAllowedIps(_peer1));

        Assert.Equal(0, Set($"public_key={_peer2.ToHex()}\nremove=true\n"));
        Assert.Equal([_peer1], _device.GetPeerStats().Keys);

        Assert.Equal(0, Set($"replace_peers=true\npublic_key={_peer2.ToHex()}\n"));
        Assert.Equal([_peer2], _device.GetPeerStats().Keys);
        Assert.Empty(_device.GetAllowedIps(_peer1));
    }

    [Fact]
    public void A_peer_with_our_own_public_key_is_ignored()
    {
        Assert.Equal(0, Set($"private_key={_private.ToHex()}\npublic_key={new WgKey(DerivePublic(_private)).ToHex()}\nallowed_ip=10.0.0.0/8\n"));
        Assert.Empty(_device.GetPeerStats());
    }

    [Theory]
    [InlineData("private_key=1234\n", WgDevice.Errno.EINVAL)]
    [InlineData("private_key=zz00000000000000000000000000000000000000000000000000000000000000\n", WgDevice.Errno.EINVAL)]
    [InlineData("listen_port=70000\n", WgDevice.Errno.EINVAL)]
    [InlineData("listen_port=-1\n", WgDevice.Errno.EINVAL)]
    [InlineData("fwmark=x\n", WgDevice.Errno.EINVAL)]
    [InlineData("replace_peers=false\n", WgDevice.Errno.EINVAL)]
    [InlineData("no_such_key=1\n", WgDevice.Errno.EINVAL)]
    [InlineData("this line has no equals sign\n", WgDevice.Errno.EPROTO)]
    [InlineData("=value\n", WgDevice.Errno.EPROTO)]
    [InlineData("public_key=abc\n", WgDevice.Errno.EINVAL)]
    [InlineData("public_key=PEER\nendpoint=nonsense\n", WgDevice.Errno.EINVAL)]
    [InlineData("public_key=PEER\nendpoint=198.18.0.1\n", WgDevice.Errno.EINVAL)]
    [InlineData("public_key=PEER\nendpoint=host.example:51820\n", WgDevice.Errno.EINVAL)]
    [InlineData("public_key=PEER\nallowed_ip=10.0.0.0/40\n", WgDevice.Errno.EINVAL)]
    [InlineData("public_key=PEER\nallowed_ip=garbage\n", WgDevice.Errno.EINVAL)]
    [InlineData("public_key=PEER\npersistent_keepalive_interval=65536\n", WgDevice.Errno.EINVAL)]
    [InlineData("public_key=PEER\nprotocol_version=2\n", WgDevice.Errno.EINVAL)]
    [InlineData("public_key=PEER\nremove=yes\n", WgDevice.Errno.EINVAL)]
    [InlineData("public_key=PEER\nupdate_only=false\n", WgDevice.Errno.EINVAL)]
    [InlineData("public_key=PEER\nprivate_key=00\n", WgDevice.Errno.EINVAL)]
    [InlineData("public_key=PEER\npreshared_key=short\n", WgDevice.Errno.EINVAL)]
    public void Bad_input_returns_errno(string body, int errno)
    {
        Assert.Equal(errno, Set(body.Replace("PEER", _peer1.ToHex(), StringComparison.Ordinal)));
    }

    [Fact]
    public void Port_in_use_returns_EADDRINUSE()
    {
        using var other = new WgDevice(new InMemoryTun(), _network.CreateBind(1), NullLoggerFactory.Instance, TimeProvider.System);
        other.SetListenPort(5000);
        other.Up();
        _device.SetListenPort(6000);
        _device.Up();
        Assert.Equal(WgDevice.Errno.EADDRINUSE, Set("listen_port=5000\n"));
        Assert.Equal(6000, _device.ListenPort); // still listening where it was
    }

    [Fact]
    public void A_blank_line_ends_the_set()
    {
        Assert.Equal(0, Set($"listen_port=7000\n\nlisten_port=garbage\n"));
        Assert.Equal(7000, _device.ListenPort);
    }

    private static string SortPeers(string text)
    {
        // Peers come out in no particular order: compare them as a set of blocks.
        var blocks = text.Split("public_key=").ToList();
        var head = blocks[0];
        return head + string.Join("|", blocks.Skip(1).Order(StringComparer.Ordinal));
    }

    public void Dispose() => _device.Dispose();
}
