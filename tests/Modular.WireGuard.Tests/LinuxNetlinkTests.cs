using System.Buffers.Binary;
using System.Net;
using Modular.Abstractions.WireGuard;
using Modular.WireGuard.Interface;
using Modular.WireGuard.Kernel;

namespace Modular.WireGuard.Tests;

/// <summary>The WireGuard generic-netlink encoding, checked byte by byte against the kernel's uapi layout.</summary>
public class LinuxNetlinkTests
{
    private static readonly WgKey Key1 = new(Enumerable.Repeat((byte)0x11, 32).ToArray());
    private static readonly WgKey Key2 = new(Enumerable.Repeat((byte)0x22, 32).ToArray());

    [Fact]
    public void SetDeviceWithKeyAndPortHasTheKernelLayout()
    {
        var message = WgNetlink.EncodeSetDevice(0x1c, 7, "wg0", WgDeviceUpdate.Device(Key1, 51820));

        var expected = Convert.FromHexString(
            "48000000" + "1c00" + "0500" + "07000000" + "00000000" + // nlmsghdr: len 72, type 0x1c, REQUEST|ACK, seq 7, pid 0
            "01010000" +                                                 // genlmsghdr: WG_CMD_SET_DEVICE, version 1
            "08000200" + "77673000" +                                    // WGDEVICE_A_IFNAME "wg0\0"
            "24000300" + new string('1', 64) +                          // WGDEVICE_A_PRIVATE_KEY (36 bytes)
            "06000600" + "6cca0000");                                    // WGDEVICE_A_LISTEN_PORT 51820 = 0xCA6C (u16 LE) + pad
        Assert.Equal(Convert.ToHexString(expected), Convert.ToHexString(message));
    }

    [Fact]
    public void SetFwmarkIsAU32DeviceAttribute()
    {
        var message = WgNetlink.EncodeSetDevice(0x1c, 3, "wg0", WgDeviceUpdate.ForFwmark(51820));

        var expected = Convert.FromHexString(
            "24000000" + "1c00" + "0500" + "03000000" + "00000000" + // nlmsghdr: len 36
            "01010000" +                                                 // WG_CMD_SET_DEVICE, version 1
            "08000200" + "77673000" +                                    // WGDEVICE_A_IFNAME "wg0\0"
            "08000700" + "6cca0000");                                    // WGDEVICE_A_FWMARK 51820 (u32 LE)
        Assert.Equal(Convert.ToHexString(expected), Convert.ToHexString(message));
        Assert.Equal("fwmark=51820\n", WgDeviceUpdate.ForFwmark(51820).ToUapiText());
    }

    [Fact]
    public void SetPeerNestsPeersAndAllowedIps()
    {
        var peer = new WgPeerConfig(Key2, [IPNetwork.Parse("100.64.0.2/32"), IPNetwork.Parse("fd00::/64")],
            IPEndPoint.Parse("198.18.0.2:51820"), PersistentKeepalive: TimeSpan.FromSeconds(25));

        var message = WgNetlink.EncodeSetDevice(0x1c, 1, "wg0", WgDeviceUpdate.ForPeer(peer));

        Assert.Equal(message.Length, BinaryPrimitives.ReadInt32LittleEndian(message));
        var top = Attributes(message.AsSpan(20));
        Assert.Equal([2, 8], top.Select(a => (int)a.Type));
        Assert.True(top[1].Nested, "WGDEVICE_A_PEERS carries NLA_F_NESTED");
        var peerEntry = Assert.Single(Attributes(top[1].Value));
        Assert.True(peerEntry.Nested);
        var fields = Attributes(peerEntry.Value).ToDictionary(a => a.Type, a => a);
        Assert.Equal(Key2.ToArray(), fields[1].Value);
        Assert.Equal(2u, BinaryPrimitives.ReadUInt32LittleEndian(fields[3].Value)); // REPLACE_ALLOWEDIPS
        Assert.Equal(new byte[32], fields[2].Value);                                 // no PSK: cleared
        Assert.Equal("0200CA6CC6120002" + "0000000000000000", Convert.ToHexString(fields[4].Value)); // sockaddr_in
        Assert.Equal(25, BinaryPrimitives.ReadUInt16LittleEndian(fields[5].Value));
        var allowed = Attributes(fields[9].Value);
        Assert.Equal(2, allowed.Count);
        var v4 = Attributes(allowed[0].Value);
        Assert.Equal(2, BinaryPrimitives.ReadUInt16LittleEndian(v4[0].Value));
        Assert.Equal(new byte[] { 100, 64, 0, 2 }, v4[1].Value);
        Assert.Equal(32, v4[2].Value[0]);
        var v6 = Attributes(allowed[1].Value);
        Assert.Equal(10, BinaryPrimitives.ReadUInt16LittleEndian(v6[0].Value));
        Assert.Equal(IPAddress.Parse("fd00::").GetAddressBytes(), v6[1].Value);
        Assert.Equal(64, v6[2].Value[0]);
    }

    [Fact]
    public void RemoveAndEndpointUpdatesUseTheirFlags()
    {
        var remove = WgNetlink.EncodeSetDevice(0x1c, 1, "wg0", WgDeviceUpdate.Remove(Key2));
        var endpoint = WgNetlink.EncodeSetDevice(0x1c, 2, "wg0", WgDeviceUpdate.ForEndpoint(Key2, IPEndPoint.Parse("[fd00::1]:4000")));

        Assert.Equal(1u, PeerFlags(remove));
        Assert.Equal(4u, PeerFlags(endpoint));
        var peer = Attributes(Attributes(Attributes(endpoint.AsSpan(20))[1].Value)[0].Value).ToDictionary(a => a.Type, a => a.Value);
        Assert.Equal(28, peer[4].Length);
        Assert.Equal(10, BinaryPrimitives.ReadUInt16LittleEndian(peer[4]));
        Assert.Equal(4000, BinaryPrimitives.ReadUInt16BigEndian(peer[4].AsSpan(2)));
    }

    [Fact]
    public void GetDeviceDumpDecodesPeerStatsAndErrorsThrow()
    {
        // A dump reply as the kernel builds it: one device message with one peer, then NLMSG_DONE.
        var w = new NetlinkWriter();
        w.BeginMessage(0x1c, 2, 1, WgNetlink.CmdGetDevice, 1);
        w.String(WgNetlink.DeviceIfName, "wg0");
        var peers = w.BeginNested(WgNetlink.DevicePeers);
        var peer = w.BeginNested(0);
        w.Bytes(WgNetlink.PeerPublicKey, Key2.ToArray());
        var timespec = new byte[16];
        BinaryPrimitives.WriteInt64LittleEndian(timespec, 1_700_000_000);
        w.Bytes(WgNetlink.PeerLastHandshake, timespec);
        w.Bytes(WgNetlink.PeerRxBytes, BitConverter.GetBytes(1234L));
        w.Bytes(WgNetlink.PeerTxBytes, BitConverter.GetBytes(5678L));
        w.Endpoint(WgNetlink.PeerEndpoint, IPEndPoint.Parse("198.18.0.9:51820"));
        w.EndNested(peer);
        w.EndNested(peers);
        var device = w.Finish();
        var done = new byte[20];
        BinaryPrimitives.WriteInt32LittleEndian(done, 20);
        BinaryPrimitives.WriteUInt16LittleEndian(done.AsSpan(4), NetlinkReader.MessageDone);

        var stats = new Dictionary<WgKey, WgPeerStats>();
        var finished = WgNetlink.DecodeGetDevice([.. device, .. done], stats);

        Assert.True(finished);
        var decoded = stats[Key2];
        Assert.Equal(DateTimeOffset.FromUnixTimeSeconds(1_700_000_000), decoded.LastHandshake);
        Assert.Equal(1234, decoded.RxBytes);
        Assert.Equal(5678, decoded.TxBytes);
        Assert.Equal(IPEndPoint.Parse("198.18.0.9:51820"), decoded.Endpoint);

        var error = new byte[36];
        BinaryPrimitives.WriteInt32LittleEndian(error, 36);
        BinaryPrimitives.WriteUInt16LittleEndian(error.AsSpan(4), NetlinkReader.MessageError);
        BinaryPrimitives.WriteInt32LittleEndian(error.AsSpan(16), -19);
        Assert.Contains("errno 19", Assert.Throws<IOException>(() => WgNetlink.DecodeGetDevice(error, stats)).Message);

        // Truncated or garbage input ends the walk quietly.
        Assert.False(WgNetlink.DecodeGetDevice(device.AsSpan(0, 30), stats));
        Assert.False(WgNetlink.DecodeGetDevice(new byte[] { 0xff, 0xff, 0xff, 0x7f, 1, 2, 3 }, stats));
    }

    private static uint PeerFlags(byte[] message)
    {
        var peer = Attributes(Attributes(Attributes(message.AsSpan(20))[1].Value)[0].Value);
        return BinaryPrimitives.ReadUInt32LittleEndian(peer.Single(a => a.Type == 3).Value);
    }

    private sealed record Attribute(int Type, bool Nested, byte[] Value);

    private static List<Attribute> Attributes(ReadOnlySpan<byte> data)
    {
        var list = new List<Attribute>();
        while (data.Length >= 4)
        {
            var length = BinaryPrimitives.ReadUInt16LittleEndian(data);
            var type = BinaryPrimitives.ReadUInt16LittleEndian(data[2..]);
            list.Add(new Attribute(type & 0x3FFF, (type & 0x8000) != 0, data[4..length].ToArray()));
            data = data[Math.Min(data.Length, (length + 3) & ~3)..];
        }

        return list;
    }
}
