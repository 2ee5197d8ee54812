using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Modular.Abstractions.WireGuard;
using Modular.Core.Firewall;
using Modular.Testing.WireGuard;
using Modular.WireGuard.Device;
using static Modular.Core.Tests.Firewall.TestPackets;

namespace Modular.Core.Tests.Firewall;

/// <summary>The firewall on the packet path of two real in-process WireGuard devices over the in-memory network.</summary>
public sealed class FirewallDeviceTests : IDisposable
{
    private const string AddressA = "100.64.0.1";
    private const string AddressB = "100.64.0.2";
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(10);

    private readonly FakeTimeProvider _time = new(DateTimeOffset.Parse("2026-03-01T12:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
    private readonly InMemoryBindPair _binds = new();
    private readonly InMemoryTun _tunA = new("fwA");
    private readonly InMemoryTun _tunB = new("fwB");
    private readonly WgDevice _a;
    private readonly WgDevice _b;
    private readonly StatefulFirewall _firewallA;
    private readonly StatefulFirewall _firewallB;

    public FirewallDeviceTests()
    {
        _a = new WgDevice(_tunA, _binds.A, NullLoggerFactory.Instance, _time);
        _b = new WgDevice(_tunB, _binds.B, NullLoggerFactory.Instance, _time);
        _a.SetPrivateKey(NewPrivateKey());
        _b.SetPrivateKey(NewPrivateKey());
        _a.SetListenPort(51820);
        _b.SetListenPort(51821);
        _a.SetPeer(new WgPeerConfig(_b.PublicKey, [IPNetwork.Parse(AddressB + "/32")], IPEndPoint.Parse("198.18.0.2:51821"), null));
        _b.SetPeer(new WgPeerConfig(_a.PublicKey, [IPNetwork.Parse(AddressA + "/32")], IPEndPoint.Parse("198.18.0.1:51820"), null));

        // The policy "A may reach B on TCP 80", as the server sends it to each side.
        _firewallA = new StatefulFirewall(null, _time);
        _firewallA.UpdateRules([
            Rule("web", RuleAction.Accept, RuleProtocol.Tcp, AddressB + "/32", "80", RuleDirection.Outbound),
            Rule("no-dns-out", RuleAction.Drop, RuleProtocol.Udp, AddressB + "/32", "53", RuleDirection.Outbound),
        ]);
        _firewallB = new StatefulFirewall(null, _time);
        _firewallB.UpdateRules([Rule("web", RuleAction.Accept, RuleProtocol.Tcp, AddressA + "/32", "80")]);
        _a.PacketFilter = _firewallA;
        _b.PacketFilter = _firewallB;
        _a.Up();
        _b.Up();
    }

    public void Dispose()
    {
        _a.Dispose();
        _b.Dispose();
        _firewallA.Dispose();
        _firewallB.Dispose();
    }

    [Fact]
    public void Only_the_allowed_connection_and_its_replies_cross_the_tunnel()
    {
        var syn = Tcp(AddressA, 40000, AddressB, 80, TcpFlags.Syn);
        Assert.Equal(syn, AToB(syn));
        var synAck = Tcp(AddressB, 80, AddressA, 40000, TcpFlags.Syn | TcpFlags.Ack);
        Assert.Equal(synAck, BToA(synAck));
        var ack = Tcp(AddressA, 40000, AddressB, 80, TcpFlags.Ack, payload: 100);
        Assert.Equal(ack, AToB(ack));

        // Blocked at B's inbound filter: never written to B's TUN. The packets keep their order, so the next
        // thing B's TUN gets after them is the allowed marker packet.
        _tunA.Inject(Tcp(AddressA, 40001, AddressB, 22, TcpFlags.Syn));
        _tunA.Inject(Udp(AddressA, 5000, AddressB, 9999));
        var marker = Tcp(AddressA, 40000, AddressB, 80, TcpFlags.Ack | TcpFlags.Psh, payload: 7);
        Assert.Equal(marker, AToB(marker));
        Assert.Equal(2, _firewallB.DefaultDrops);

        // B may not open connections to A (no rule lets them in at A), though replies pass.
        _tunB.Inject(Tcp(AddressB, 41000, AddressA, 80, TcpFlags.Syn));
        var reply = Tcp(AddressB, 80, AddressA, 40000, TcpFlags.Ack, payload: 9);
        Assert.Equal(reply, BToA(reply));
        Assert.Equal(1, _firewallA.DefaultDrops);

        // B tracks the connection A opened (and its own attempt towards A, which A refused).
        var flow = Assert.Single(_firewallB.SnapshotFlows(), f => f.Direction == RuleDirection.Inbound);
        Assert.Equal(ConnectionState.Established, flow.State);
        Assert.Equal("web", flow.RuleId);
        Assert.Equal(3UL, flow.OriginalPackets);
        Assert.Equal(2UL, flow.ReplyPackets);
    }

    [Fact]
    public void An_outbound_drop_never_reaches_the_peer()
    {
        var syn = Tcp(AddressA, 40000, AddressB, 80, TcpFlags.Syn);
        Assert.Equal(syn, AToB(syn));
        var sentBefore = _binds.A.Sent;
        _tunA.Inject(Udp(AddressA, 5353, AddressB, 53));
        var marker = Tcp(AddressA, 40000, AddressB, 80, TcpFlags.Ack);
        Assert.Equal(marker, AToB(marker));
        Assert.Equal(1, _firewallA.DropsByRule["no-dns-out"]);
        Assert.Equal(0, _firewallB.DefaultDrops);
        Assert.Equal(sentBefore + 1, _binds.A.Sent);
    }

    private byte[]? AToB(byte[] packet)
    {
        _tunA.Inject(packet);
        return _tunB.TryReadWritten(Wait);
    }

    private byte[]? BToA(byte[] packet)
    {
        _tunB.Inject(packet);
        return _tunA.TryReadWritten(Wait);
    }

    private static WgKey NewPrivateKey() => Modular.WireGuard.Interface.WgKeys.GeneratePrivateKey();
}
