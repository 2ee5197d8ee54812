using System.Buffers.Binary;
using Modular.Core.MeshDns;
using static Modular.Core.Tests.Dns.DnsTestMessages;

namespace Modular.Core.Tests.Dns;

/// <summary>RFC 1035 reading: real dig queries, compression, and every kind of broken input.</summary>
public sealed class DnsWireTests
{
    [Fact]
    public void A_captured_dig_query_with_edns_parses()
    {
        Span<byte> name = stackalloc byte[255];
        Assert.Equal(DnsParseError.None, DnsMessageReader.TryParseQuery(DigQueryWithEdns, name, out var q));
        Assert.Equal(0x1bc4, q.Id);
        Assert.Equal(DnsConstants.TypeA, q.Type);
        Assert.Equal(DnsConstants.ClassIn, q.Class);
        Assert.True(q.RecursionDesired);
        Assert.True(q.HasOpt);
        Assert.Equal(1232, q.UdpLimit);
        Assert.True(DnsMessageReader.NamesEqual(q.Name, DnsMessageReader.ToWireName("peer-b.modular.internal")));
        Assert.Equal((byte)'P', q.Name[1]); // the client's case is kept for the answer's question
    }

    [Fact]
    public void A_captured_dig_query_without_edns_has_the_classic_512_limit()
    {
        Span<byte> name = stackalloc byte[255];
        Assert.Equal(DnsParseError.None, DnsMessageReader.TryParseQuery(DigQueryNoEdns, name, out var q));
        Assert.Equal(DnsConstants.TypeAaaa, q.Type);
        Assert.False(q.HasOpt);
        Assert.Equal(512, q.UdpLimit);
    }

    [Fact]
    public void Compressed_names_are_followed_backwards()
    {
        // "corp.test" at 12, then "host" + pointer to 12 at 23.
        byte[] message = [.. new byte[12], 4, .. "corp"u8, 4, .. "test"u8, 0, 4, .. "host"u8, 0xC0, 12, 0xFF];
        Span<byte> name = stackalloc byte[255];
        Assert.True(DnsMessageReader.TryReadName(message, 23, name, out var length, out var next));
        Assert.Equal(30, next);
        Assert.True(DnsMessageReader.NamesEqual(name[..length], DnsMessageReader.ToWireName("host.corp.test")));
    }

    [Theory]
    [InlineData(new byte[] { 0xC0, 12 })]              // a pointer to itself
    [InlineData(new byte[] { 0xC0, 14, 0 })]           // a pointer forwards
    [InlineData(new byte[] { 0x40, 0 })]               // a reserved label type
    [InlineData(new byte[] { 0x80, 0 })]
    [InlineData(new byte[] { 5, (byte)'a', (byte)'b' })] // a label past the end
    [InlineData(new byte[] { 0xC0 })]                  // half a pointer
    [InlineData(new byte[] { 3, (byte)'a', (byte)'b', (byte)'c' })] // no root label
    public void Broken_names_are_refused(byte[] name)
    {
        byte[] message = [.. new byte[12], .. name];
        Span<byte> buffer = stackalloc byte[255];
        Assert.False(DnsMessageReader.TryReadName(message, 12, buffer, out _, out _));
    }

    [Fact]
    public void A_pointer_chain_loop_between_two_labels_is_refused()
    {
        // 12: "a" then pointer to 16; 16: pointer to 12: each pointer goes backwards only once, then forwards.
        byte[] message = [.. new byte[12], 1, (byte)'a', 0xC0, 16, 0xC0, 12];
        Span<byte> buffer = stackalloc byte[255];
        Assert.False(DnsMessageReader.TryReadName(message, 16, buffer, out _, out _));
    }

    [Fact]
    public void A_name_over_255_bytes_is_refused()
    {
        var message = new List<byte>(new byte[12]);
        for (var i = 0; i < 5; i++)
        {
            message.Add(63);
            message.AddRange(Enumerable.Repeat((byte)'a', 63));
        }

        message.Add(0);
        Span<byte> buffer = stackalloc byte[255];
        Assert.False(DnsMessageReader.TryReadName([.. message], 12, buffer, out _, out _));
    }

    [Fact]
    public void Header_problems_map_to_drop_formerr_and_notimp()
    {
        Span<byte> name = stackalloc byte[255];
        Assert.Equal(DnsParseError.NotAQuery, DnsMessageReader.TryParseQuery(new byte[11], name, out _));
        var response = Query("a.test", 1, flags: 0x8100);
        Assert.Equal(DnsParseError.NotAQuery, DnsMessageReader.TryParseQuery(response, name, out _));
        var notify = Query("a.test", 1, flags: 4 << 11);
        Assert.Equal(DnsParseError.NotImplemented, DnsMessageReader.TryParseQuery(notify, name, out _));
        var two = Query("a.test", 1);
        BinaryPrimitives.WriteUInt16BigEndian(two.AsSpan(4), 2);
        Assert.Equal(DnsParseError.Malformed, DnsMessageReader.TryParseQuery(two, name, out var q));
        Assert.Equal(0x1234, q.Id);
        Assert.Equal(DnsParseError.Malformed, DnsMessageReader.TryParseQuery(Query("a.test", 1).AsSpan()[..^1], name, out _));
        var additionalPastEnd = Query("a.test", 1);
        BinaryPrimitives.WriteUInt16BigEndian(additionalPastEnd.AsSpan(10), 1);
        Assert.Equal(DnsParseError.Malformed, DnsMessageReader.TryParseQuery(additionalPastEnd, name, out _));
    }

    [Fact]
    public void Suffix_matching_follows_label_boundaries_and_ignores_case()
    {
        var zone = DnsMessageReader.ToWireName("mesh.test")!;
        Assert.Equal(0, DnsMessageReader.SuffixOffset(DnsMessageReader.ToWireName("MESH.test")!, zone));
        Assert.Equal(5, DnsMessageReader.SuffixOffset(DnsMessageReader.ToWireName("peer.mesh.test")!, zone));
        Assert.Equal(-1, DnsMessageReader.SuffixOffset(DnsMessageReader.ToWireName("xmesh.test")!, zone));
        Assert.Equal(-1, DnsMessageReader.SuffixOffset(DnsMessageReader.ToWireName("test")!, zone));
        Assert.Null(DnsMessageReader.ToWireName("a..b"));
        Assert.Null(DnsMessageReader.ToWireName(new string('a', 64) + ".test"));
    }

    [Fact]
    public void Random_bytes_and_mutated_queries_never_throw_and_always_get_a_sound_answer_or_none()
    {
        var resolver = new DnsResolver(new DnsForwarder(null, TimeProvider.System, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance), Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance)
        {
            Records = DnsRecords.FromMap(Map()),
        };
        var random = new Random(20261125);
        var response = new byte[DnsConstants.EdnsUdpLimit];
        var seeds = new[] { DigQueryWithEdns, DigQueryNoEdns, Query("peer-b.modular.internal", 1), Query("nope.modular.internal", 28) };
        var answered = 0;
        for (var i = 0; i < 20_000; i++)
        {
            byte[] input;
            if (i % 3 == 0)
            {
                input = new byte[random.Next(0, 80)];
                random.NextBytes(input);
            }
            else
            {
                var seed = seeds[random.Next(seeds.Length)];
                input = seed[..random.Next(0, seed.Length + 1)];
                for (var flips = random.Next(1, 4); flips > 0 && input.Length > 0; flips--)
                {
                    input[random.Next(input.Length)] = (byte)random.Next(256);
                }
            }

            var outcome = resolver.Answer(input, response, out var written, out var group);
            if (outcome == DnsOutcome.Answered)
            {
                answered++;
                Assert.InRange(written, 12, 512);
                Assert.Equal(input[0], response[0]);
                Assert.Equal(input[1], response[1]);
                Parse(response.AsSpan(0, written));
            }
            else if (outcome == DnsOutcome.Forward)
            {
                Assert.NotNull(group);
            }
        }

        Assert.True(answered > 500, $"only {answered} answered");
    }
}
