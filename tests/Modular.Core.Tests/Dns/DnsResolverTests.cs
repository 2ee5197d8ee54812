using Microsoft.Extensions.Logging.Abstractions;
using Modular.Control.Management;
using Modular.Core.MeshDns;
using static Modular.Core.Tests.Dns.DnsTestMessages;

namespace Modular.Core.Tests.Dns;

/// <summary>Answers from the zone: A/AAAA, NXDOMAIN vs NODATA (with the SOA), case, the apex, refusals.</summary>
public sealed class DnsResolverTests : IDisposable
{
    private readonly DnsForwarder _forwarder = new(null, TimeProvider.System, NullLogger.Instance);
    private readonly DnsResolver _resolver;

    public DnsResolverTests()
    {
        _resolver = new DnsResolver(_forwarder, NullLogger.Instance) { Records = DnsRecords.FromMap(Map()) };
    }

    public void Dispose() => _forwarder.Dispose();

    private Response Ask(byte[] query)
    {
        var buffer = new byte[512];
        Assert.Equal(DnsOutcome.Answered, _resolver.Answer(query, buffer, out var written, out _));
        return Parse(buffer.AsSpan(0, written));
    }

    [Fact]
    public void The_captured_dig_query_gets_peer_bs_address_with_the_question_as_asked()
    {
        var r = Ask(DigQueryWithEdns);
        Assert.Equal(0x1bc4, r.Id);
        Assert.Equal(0, r.Rcode);
        Assert.True(r.Authoritative);
        Assert.Equal("Peer-B.Modular.Internal", r.Question);
        Assert.Equal([(DnsConstants.TypeA, "100.64.0.2")], r.Answers);
        Assert.True(r.HasOpt);
    }

    [Fact]
    public void Self_is_in_the_zone_and_names_are_case_insensitive()
    {
        Assert.Equal([(DnsConstants.TypeA, "100.64.0.1")], Ask(Query("ALPHA.modular.INTERNAL", DnsConstants.TypeA)).Answers);
        Assert.Equal([(DnsConstants.TypeA, "100.64.0.1")], Ask(Query("alpha.modular.internal.", DnsConstants.TypeA)).Answers);
    }

    [Fact]
    public void Aaaa_answers_the_ipv6_overlay_address_and_any_gives_both()
    {
        Assert.Equal([(DnsConstants.TypeAaaa, "fd00::2")], Ask(Query("peer-b.modular.internal", DnsConstants.TypeAaaa)).Answers);
        Assert.Equal([(DnsConstants.TypeA, "100.64.0.2"), (DnsConstants.TypeAaaa, "fd00::2")], Ask(Query("peer-b.modular.internal", DnsConstants.TypeAny)).Answers);
    }

    [Fact]
    public void A_known_name_without_the_type_is_nodata_with_the_soa()
    {
        var aaaa = Ask(Query("alpha.modular.internal", DnsConstants.TypeAaaa));
        Assert.Equal(0, aaaa.Rcode);
        Assert.Empty(aaaa.Answers);
        Assert.Equal([DnsConstants.TypeSoa], aaaa.Authority);

        var a = Ask(Query("v6only.modular.internal", DnsConstants.TypeA));
        Assert.Equal(0, a.Rcode);
        Assert.Empty(a.Answers);

        var mx = Ask(Query("peer-b.modular.internal", 15));
        Assert.Equal(0, mx.Rcode);
        Assert.Empty(mx.Answers);
        Assert.Equal([DnsConstants.TypeSoa], mx.Authority);
    }

    [Theory]
    [InlineData("nobody.modular.internal")]
    [InlineData("sub.peer-b.modular.internal")]
    [InlineData("broken.modular.internal")] // its only address did not parse: not in the zone
    [InlineData("elsewhere.modular.internal")] // its fqdn is outside the zone
    public void An_unknown_name_in_the_zone_is_nxdomain_with_the_soa(string name)
    {
        var r = Ask(Query(name, DnsConstants.TypeA));
        Assert.Equal((int)DnsRcode.NxDomain, r.Rcode);
        Assert.True(r.Authoritative);
        Assert.Empty(r.Answers);
        Assert.Equal([DnsConstants.TypeSoa], r.Authority);
    }

    [Fact]
    public void The_apex_answers_its_soa_and_nothing_else()
    {
        var soa = Ask(Query("modular.internal", DnsConstants.TypeSoa));
        Assert.Equal(0, soa.Rcode);
        Assert.Equal(DnsConstants.TypeSoa, Assert.Single(soa.Answers).Type);
        var a = Ask(Query("modular.internal", DnsConstants.TypeA));
        Assert.Equal(0, a.Rcode);
        Assert.Empty(a.Answers);
        Assert.Equal([DnsConstants.TypeSoa], a.Authority);
    }

    [Fact]
    public void A_peers_overlay_address_resolves_back_to_its_name()
    {
        var r = Ask(Query("2.0.64.100.IN-ADDR.arpa", DnsConstants.TypePtr));
        Assert.Equal(0, r.Rcode);
        Assert.True(r.Authoritative);
        var (type, data) = Assert.Single(r.Answers);
        Assert.Equal(DnsConstants.TypePtr, type);
        Assert.Equal(Convert.ToHexString(DnsMessageReader.ToWireName("peer-b.modular.internal")!), data);
        Assert.Single(Ask(Query("1.0.64.100.in-addr.arpa", DnsConstants.TypePtr)).Answers); // self

        // Unknown addresses, malformed octets and other types are not ours: no group here, so REFUSED.
        Assert.Equal((int)DnsRcode.Refused, Ask(Query("9.9.64.100.in-addr.arpa", DnsConstants.TypePtr)).Rcode);
        Assert.Equal((int)DnsRcode.Refused, Ask(Query("02.0.64.100.in-addr.arpa", DnsConstants.TypePtr)).Rcode);
        Assert.Equal((int)DnsRcode.Refused, Ask(Query("256.0.64.100.in-addr.arpa", DnsConstants.TypePtr)).Rcode);
        Assert.Equal((int)DnsRcode.Refused, Ask(Query("2.0.64.100.in-addr.arpa.evil", DnsConstants.TypePtr)).Rcode);
        Assert.Equal((int)DnsRcode.Refused, Ask(Query("2.0.64.100.in-addr.arpa", DnsConstants.TypeA)).Rcode);
    }

    [Fact]
    public void Names_outside_the_zone_without_a_group_are_refused()
    {
        var r = Ask(Query("example.com", DnsConstants.TypeA));
        Assert.Equal((int)DnsRcode.Refused, r.Rcode);
        Assert.False(r.Authoritative);
        Assert.Equal("example.com", r.Question);
        Assert.Equal(1, _resolver.Refused);
    }

    [Fact]
    public void Other_classes_in_the_zone_are_refused()
        => Assert.Equal((int)DnsRcode.Refused, Ask(Query("peer-b.modular.internal", 1, @class: 3)).Rcode);

    [Fact]
    public void Bad_queries_get_formerr_or_notimp_with_the_clients_id_and_responses_get_nothing()
    {
        var two = Query("a.test", 1, id: 0x4242);
        two[5] = 2;
        var formerr = Ask(two);
        Assert.Equal(0x4242, formerr.Id);
        Assert.Equal((int)DnsRcode.FormErr, formerr.Rcode);
        Assert.Equal((int)DnsRcode.NotImp, Ask(Query("a.test", 1, flags: 2 << 11)).Rcode);
        Assert.Equal(DnsOutcome.Drop, _resolver.Answer(Query("a.test", 1, flags: 0x8180), new byte[512], out _, out _));
    }

    [Fact]
    public void A_new_map_replaces_the_records_at_once()
    {
        var map = Map();
        map.RemotePeers.Clear();
        map.RemotePeers.Add(new RemotePeer { Fqdn = "carol.modular.internal", AllowedIps = { "100.64.0.7/32" } });
        _resolver.Records = DnsRecords.FromMap(map);
        Assert.Equal((int)DnsRcode.NxDomain, Ask(Query("peer-b.modular.internal", 1)).Rcode);
        Assert.Equal([(DnsConstants.TypeA, "100.64.0.7")], Ask(Query("carol.modular.internal", 1)).Answers);
    }

    [Theory]
    [InlineData("198.18.0.1", "198.18.0.1:53")]
    [InlineData("198.18.0.1:5353", "198.18.0.1:5353")]
    [InlineData("[2001:db8::1]:5353", "[2001:db8::1]:5353")]
    [InlineData("2001:db8::1", "[2001:db8::1]:53")]
    public void Nameserver_text_keeps_its_port(string text, string expected)
    {
        Assert.True(DnsRecords.TryParseNameserver(text, out var endpoint));
        Assert.Equal(expected, endpoint.ToString());
    }

    [Fact]
    public void Groups_match_the_longest_domain_suffix_then_the_default()
    {
        var records = DnsRecords.FromMap(Map(
            "modular.internal",
            new NameserverGroup { Name = "corp", Nameservers = { "198.18.0.1" }, Domains = { "corp.test" } },
            new NameserverGroup { Name = "lab", Nameservers = { "198.18.0.2:5353" }, Domains = { "Lab.Corp.Test." } },
            new NameserverGroup { Name = "default", Nameservers = { "198.18.0.3", "bogus" } },
            new NameserverGroup { Name = "empty", Nameservers = { "bogus" }, Domains = { "empty.test" } }));
        Assert.Equal("corp", records.GroupFor("host.corp.test")?.Name);
        Assert.Equal("corp", records.GroupFor("corp.test")?.Name);
        Assert.Equal("lab", records.GroupFor("a.lab.corp.test")?.Name);
        Assert.Equal("default", records.GroupFor("xcorp.test")?.Name);
        Assert.Equal("default", records.GroupFor("empty.test")?.Name); // a group without one readable server is left out
        Assert.Equal(5353, records.Groups.Single(g => g.Name == "lab").Servers[0].Port);
        Assert.Single(records.Groups.Single(g => g.Name == "default").Servers);

        _resolver.Records = records;
        Assert.Equal(DnsOutcome.Forward, _resolver.Answer(Query("Host.Corp.Test", 1), new byte[512], out _, out var group));
        Assert.Equal("corp", group?.Name);
        Assert.Equal(DnsOutcome.Answered, _resolver.Answer(Query("peer-b.modular.internal", 1), new byte[512], out _, out _));
    }
}
