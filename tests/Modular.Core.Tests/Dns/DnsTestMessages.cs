using System.Buffers.Binary;
using System.Net;
using Modular.Control.Management;
using Modular.Core.MeshDns;

namespace Modular.Core.Tests.Dns;

/// <summary>Queries as real clients send them, a small independent response reader, and a map to answer from.</summary>
internal static class DnsTestMessages
{
    /// <summary>`dig Peer-B.Modular.Internal A` (9.18, EDNS payload 1232 with a cookie option), captured from the wire.</summary>
    public static readonly byte[] DigQueryWithEdns = Convert.FromHexString(
        "1bc40120000100000000000106506565722d42074d6f64756c617208496e7465726e616c000001000100002904d000000000000c000a0008ac9cc6e19e09d258");

    /// <summary>`dig +noedns host.corp.test AAAA`, captured from the wire.</summary>
    public static readonly byte[] DigQueryNoEdns = Convert.FromHexString("46c90120000100000000000004686f737404636f7270047465737400001c0001");

    /// <summary>A query written by hand (RFC 1035 4.1): ID, RD, one question, no EDNS.</summary>
    public static byte[] Query(string name, ushort type, ushort id = 0x1234, ushort flags = 0x0100, ushort @class = 1)
    {
        var wire = DnsMessageReader.ToWireName(name)!;
        // Keep the caller's letter case (ToWireName lowers it): copy the labels again from the text.
        var position = 0;
        foreach (var label in name.TrimEnd('.').Split('.'))
        {
            position++;
            foreach (var c in label)
            {
                wire[position++] = (byte)c;
            }
        }

        var message = new byte[12 + wire.Length + 4];
        BinaryPrimitives.WriteUInt16BigEndian(message, id);
        BinaryPrimitives.WriteUInt16BigEndian(message.AsSpan(2), flags);
        BinaryPrimitives.WriteUInt16BigEndian(message.AsSpan(4), 1);
        wire.CopyTo(message, 12);
        BinaryPrimitives.WriteUInt16BigEndian(message.AsSpan(12 + wire.Length), type);
        BinaryPrimitives.WriteUInt16BigEndian(message.AsSpan(12 + wire.Length + 2), @class);
        return message;
    }

    /// <summary>A map: self "alpha" 100.64.0.1, "Peer-B" 100.64.0.2, "v6only" with an IPv6 overlay address.</summary>
    public static NetworkMap Map(string zone = "modular.internal", params NameserverGroup[] groups)
    {
        var map = new NetworkMap
        {
            Serial = 42,
            PeerConfig = new PeerConfig { Address = "100.64.0.1/10", Fqdn = $"alpha.{zone}", DnsDomain = zone },
            Dns = new DnsConfig { Enabled = true, Zone = zone, NameserverGroups = { groups } },
        };
        map.RemotePeers.Add(new RemotePeer { Hostname = "Peer-B", Fqdn = $"peer-b.{zone}", AllowedIps = { "100.64.0.2/32", "fd00::2/128" } });
        map.RemotePeers.Add(new RemotePeer { Hostname = "v6", Fqdn = $"v6only.{zone}", AllowedIps = { "fd00::3/128" } });
        map.RemotePeers.Add(new RemotePeer { Hostname = "broken", Fqdn = $"broken.{zone}", AllowedIps = { "not-an-ip" } });
        map.RemotePeers.Add(new RemotePeer { Hostname = "elsewhere", Fqdn = "elsewhere.other.zone", AllowedIps = { "100.64.0.9/32" } });
        return map;
    }

    /// <summary>A response read independently of the code under test (no compression support needed beyond pointers to offset 12+).</summary>
    public sealed record Response(ushort Id, ushort Flags, int Rcode, string Question, List<(ushort Type, string Data)> Answers, List<ushort> Authority, bool HasOpt)
    {
        public bool Authoritative => (Flags & 0x0400) != 0;

        public bool Truncated => (Flags & 0x0200) != 0;
    }

    public static Response Parse(ReadOnlySpan<byte> message)
    {
        var id = BinaryPrimitives.ReadUInt16BigEndian(message);
        var flags = BinaryPrimitives.ReadUInt16BigEndian(message[2..]);
        Assert.True((flags & 0x8000) != 0, "QR must be set");
        var qd = BinaryPrimitives.ReadUInt16BigEndian(message[4..]);
        var an = BinaryPrimitives.ReadUInt16BigEndian(message[6..]);
        var ns = BinaryPrimitives.ReadUInt16BigEndian(message[8..]);
        var ar = BinaryPrimitives.ReadUInt16BigEndian(message[10..]);
        var position = 12;
        var question = "";
        for (var i = 0; i < qd; i++)
        {
            question = ReadName(message, ref position);
            position += 4;
        }

        var answers = new List<(ushort, string)>();
        var authority = new List<ushort>();
        var hasOpt = false;
        for (var i = 0; i < an + ns + ar; i++)
        {
            ReadName(message, ref position);
            var type = BinaryPrimitives.ReadUInt16BigEndian(message[position..]);
            var length = BinaryPrimitives.ReadUInt16BigEndian(message[(position + 8)..]);
            var data = message.Slice(position + 10, length);
            position += 10 + length;
            if (i < an)
            {
                answers.Add((type, type is 1 or 28 ? new IPAddress(data).ToString() : Convert.ToHexString(data)));
            }
            else if (i < an + ns)
            {
                authority.Add(type);
            }
            else if (type == 41)
            {
                hasOpt = true;
            }
        }

        Assert.Equal(message.Length, position);
        return new Response(id, flags, flags & 0xF, question, answers, authority, hasOpt);
    }

    private static string ReadName(ReadOnlySpan<byte> message, ref int position)
    {
        var labels = new List<string>();
        var p = position;
        var jumped = false;
        while (message[p] != 0)
        {
            if ((message[p] & 0xC0) == 0xC0)
            {
                if (!jumped)
                {
                    position = p + 2;
                }

                jumped = true;
                p = ((message[p] & 0x3F) << 8) | message[p + 1];
                continue;
            }

            labels.Add(System.Text.Encoding.ASCII.GetString(message.Slice(p + 1, message[p])));
            p += 1 + message[p];
        }

        if (!jumped)
        {
            position = p + 1;
        }

        return string.Join('.', labels);
    }
}
