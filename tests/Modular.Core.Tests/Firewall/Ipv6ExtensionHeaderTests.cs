using System.Buffers.Binary;
using Microsoft.Extensions.Time.Testing;
using Modular.Core.Firewall;
using static Modular.Core.Tests.Firewall.TestPackets;

namespace Modular.Core.Tests.Firewall;

/// <summary>
/// Issue 13 item 16: IPv6 fragments of packets with extension headers (hop-by-hop, routing, destination options
/// before the fragment header, destination options after it) follow their first fragment like any other fragment;
/// a malformed extension header chain is a clean drop, never an exception or a pass.
/// </summary>
public sealed class Ipv6ExtensionHeaderTests : IDisposable
{
    private const byte HopByHop = 0;
    private const byte Routing = 43;
    private const byte FragmentHeader = 44;
    private const byte DestinationOptions = 60;

    private readonly FakeTimeProvider _time = new();
    private readonly StatefulFirewall _firewall;

    public Ipv6ExtensionHeaderTests()
    {
        _firewall = new StatefulFirewall(new FirewallOptions(), _time);
        _firewall.UpdateRules([Rule("v6-dns", RuleAction.Accept, RuleProtocol.Udp, "fd00::1/128", "53")]);
    }

    public void Dispose() => _firewall.Dispose();

    public static TheoryData<byte[], byte[]> Chains => new()
    {
        // Before the fragment header (unfragmentable part) / after it (fragmentable part, only in the first fragment's view).
        { [HopByHop], [] },
        { [HopByHop, Routing], [] },
        { [HopByHop, DestinationOptions, Routing], [] },
        { [], [DestinationOptions] },
        { [HopByHop, Routing], [DestinationOptions] },
    };

    [Theory]
    [MemberData(nameof(Chains))]
    public void Ipv6_fragments_with_extension_headers_follow_their_first_fragment(byte[] before, byte[] after)
    {
        var first = FragmentOf(before, after, 53, id: 0x1234, offsetUnits: 0, more: true);
        var later = FragmentOf(before, after, 53, id: 0x1234, offsetUnits: 20, more: false);
        var stranger = FragmentOf(before, after, 53, id: 0x9999, offsetUnits: 20, more: false);

        Assert.True(PacketParser.TryParse(first, out var header), "the first fragment did not parse");
        Assert.True(header.IsFirstFragment);
        Assert.Equal(IpProtocol.Udp, header.Protocol);
        Assert.Equal(53, header.DestinationPort);

        Assert.True(_firewall.AllowInbound(first), "the first fragment (UDP 53, allowed) was dropped");
        Assert.True(_firewall.AllowInbound(later), "a later fragment of an allowed packet was dropped");
        Assert.False(_firewall.AllowInbound(stranger), "a later fragment whose first fragment was never seen passed");
        Assert.Equal(0, _firewall.MalformedDrops);

        // A denied first fragment (UDP 54) opens none of its later fragments.
        Assert.False(_firewall.AllowInbound(FragmentOf(before, after, 54, id: 0x5678, offsetUnits: 0, more: true)));
        Assert.False(_firewall.AllowInbound(FragmentOf(before, after, 54, id: 0x5678, offsetUnits: 20, more: false)));
    }

    [Fact]
    public void A_malformed_ipv6_extension_header_chain_is_a_clean_drop()
    {
        var valid = FragmentOf([HopByHop], [DestinationOptions], 53, id: 1, offsetUnits: 0, more: true);
        Assert.True(PacketParser.TryParse(valid, out _));

        // Hop-by-hop anywhere but right after the fixed header (RFC 8200 section 4.3).
        AssertRefused(Build([DestinationOptions, HopByHop], IpProtocol.Udp, UdpTo(53)));

        // Two fragment headers.
        AssertRefused(Build([FragmentHeader, FragmentHeader], IpProtocol.Udp, UdpTo(53)));

        // An extension header whose length runs past the packet.
        var overlong = Build([DestinationOptions], IpProtocol.Udp, UdpTo(53));
        overlong[41] = 200;
        AssertRefused(overlong);

        // Cut inside the chain or the UDP header (three 8-byte headers, then 8 of UDP), at every length.
        for (var length = 40; length < 40 + 24 + 8; length++)
        {
            var cut = valid.AsSpan(0, length).ToArray();
            BinaryPrimitives.WriteUInt16BigEndian(cut.AsSpan(4), (ushort)(length - 40));
            AssertRefused(cut);
        }

        // Longer than the bound on the chain (nine destination options headers).
        AssertRefused(Build([.. Enumerable.Repeat(DestinationOptions, 9)], IpProtocol.Udp, UdpTo(53)));
    }

    [Fact]
    public void Random_ipv6_extension_header_chains_never_throw()
    {
        var random = new Random(16);
        var seed = FragmentOf([HopByHop, Routing], [DestinationOptions], 53, id: 3, offsetUnits: 0, more: true);
        var buffer = new byte[seed.Length];
        for (var i = 0; i < 20_000; i++)
        {
            seed.CopyTo(buffer, 0);
            for (var flips = random.Next(1, 4); flips > 0; flips--)
            {
                buffer[40 + random.Next(seed.Length - 40)] = (byte)random.Next(256);
            }

            _ = PacketParser.TryParse(buffer.AsSpan(0, random.Next(buffer.Length + 1)), out _);
            _ = _firewall.AllowInbound(buffer);
        }
    }

    private void AssertRefused(byte[] packet)
    {
        var before = _firewall.MalformedDrops;
        Assert.False(PacketParser.TryParse(packet, out _), "a malformed extension header chain parsed");
        Assert.False(_firewall.AllowInbound(packet));
        Assert.Equal(before + 1, _firewall.MalformedDrops);
    }

    /// <summary>
    /// A fragment of a UDP packet fd00::1:5000 → fd00::2:<paramref name="port"/>: the headers <paramref name="before"/>
    /// the fragment header, then (in the first fragment) the headers <paramref name="after"/> it and UDP; a later
    /// fragment carries the fragment header (naming the first header after it) and opaque data.
    /// </summary>
    private static byte[] FragmentOf(byte[] before, byte[] after, ushort port, uint id, ushort offsetUnits, bool more)
    {
        var fragment = new byte[8];
        fragment[0] = after.Length > 0 ? after[0] : IpProtocol.Udp;
        BinaryPrimitives.WriteUInt16BigEndian(fragment.AsSpan(2), (ushort)((offsetUnits << 3) | (more ? 1 : 0)));
        BinaryPrimitives.WriteUInt32BigEndian(fragment.AsSpan(4), id);
        var payload = offsetUnits == 0
            ? [.. Chain(after, IpProtocol.Udp), .. UdpTo(port)]
            : new byte[64];
        return Build([.. before, FragmentHeader], fragment[0], payload, fragment);
    }

    private static byte[] UdpTo(ushort port)
    {
        var udp = new byte[8 + 32];
        BinaryPrimitives.WriteUInt16BigEndian(udp, 5000);
        BinaryPrimitives.WriteUInt16BigEndian(udp.AsSpan(2), port);
        BinaryPrimitives.WriteUInt16BigEndian(udp.AsSpan(4), (ushort)udp.Length);
        return udp;
    }

    /// <summary>8-byte extension headers of the given types chained to <paramref name="last"/>.</summary>
    private static byte[] Chain(byte[] types, byte last)
    {
        var chain = new byte[types.Length * 8];
        for (var i = 0; i < types.Length; i++)
        {
            chain[i * 8] = i + 1 < types.Length ? types[i + 1] : last;
            chain[(i * 8) + 1] = 0; // (0 + 1) * 8 bytes
            if (types[i] == Routing)
            {
                chain[(i * 8) + 2] = 4; // a routing type with no segments left
            }
        }

        return chain;
    }

    /// <summary>
    /// An IPv6 packet fd00::1 → fd00::2 with extension headers of <paramref name="types"/> (8 bytes each; a fragment
    /// header is <paramref name="fragment"/> when given), the last naming <paramref name="last"/>, then <paramref name="payload"/>.
    /// </summary>
    private static byte[] Build(byte[] types, byte last, byte[] payload, byte[]? fragment = null)
    {
        var chain = Chain(types, last);
        for (var i = 0; i < types.Length; i++)
        {
            if (types[i] == FragmentHeader && fragment is not null)
            {
                var next = chain[i * 8];
                fragment.CopyTo(chain, i * 8);
                chain[i * 8] = next;
            }
        }

        var packet = Ip("fd00::1", "fd00::2", types.Length > 0 ? types[0] : last, [.. chain, .. payload]);
        return packet;
    }
}
