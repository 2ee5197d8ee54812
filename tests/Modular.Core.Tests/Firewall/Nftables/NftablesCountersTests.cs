using Modular.Core.Firewall.Nftables;

namespace Modular.Core.Tests.Firewall.Nftables;

/// <summary>Counters out of `nft -j list table`: a sample captured from nftables 1.0.6 after real traffic.</summary>
public sealed class NftablesCountersTests
{
    // `nft -j list table inet modular_lo` after 2 pings (default drop) and 3 datagrams to udp/9 (rule "no-discard",
    // which is split over two nft rules) on loopback in a scratch namespace.
    private const string Captured = """
        {"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"table": {"family": "inet", "name": "modular_lo", "handle": 1}}, {"chain": {"family": "inet", "table": "modular_lo", "name": "input", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "accept"}}, {"chain": {"family": "inet", "table": "modular_lo", "name": "output", "handle": 2, "type": "filter", "hook": "output", "prio": 0, "policy": "accept"}}, {"chain": {"family": "inet", "table": "modular_lo", "name": "mesh_in", "handle": 3}}, {"chain": {"family": "inet", "table": "modular_lo", "name": "mesh_out", "handle": 4}}, {"rule": {"family": "inet", "table": "modular_lo", "chain": "input", "handle": 5, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "lo"}}, {"jump": {"target": "mesh_in"}}]}}, {"rule": {"family": "inet", "table": "modular_lo", "chain": "output", "handle": 6, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "lo"}}, {"jump": {"target": "mesh_out"}}]}}, {"rule": {"family": "inet", "table": "modular_lo", "chain": "mesh_in", "handle": 7, "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}, {"accept": null}]}}, {"rule": {"family": "inet", "table": "modular_lo", "chain": "mesh_in", "handle": 8, "comment": "invalid", "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "invalid"}}, {"counter": {"packets": 0, "bytes": 0}}, {"drop": null}]}}, {"rule": {"family": "inet", "table": "modular_lo", "chain": "mesh_in", "handle": 9, "comment": "invalid", "expr": [{"match": {"op": "!=", "left": {"&": [{"payload": {"protocol": "tcp", "field": "flags"}}, ["syn", "rst", "ack"]]}, "right": "syn"}}, {"counter": {"packets": 0, "bytes": 0}}, {"drop": null}]}}, {"rule": {"family": "inet", "table": "modular_lo", "chain": "mesh_in", "handle": 11, "comment": "mesh-dns", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "127.0.0.2"}}, {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": {"set": ["tcp", "udp"]}}}, {"match": {"op": "==", "left": {"payload": {"protocol": "th", "field": "dport"}}, "right": 53}}, {"accept": null}]}}, {"rule": {"family": "inet", "table": "modular_lo", "chain": "mesh_in", "handle": 13, "comment": "web", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "127.0.0.1"}}, {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": {"set": [80, 443]}}}, {"counter": {"packets": 0, "bytes": 0}}, {"accept": null}]}}, {"rule": {"family": "inet", "table": "modular_lo", "chain": "mesh_in", "handle": 14, "comment": "no-discard", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": "127.0.0.0", "len": 8}}}}, {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 9}}, {"counter": {"packets": 3, "bytes": 90}}, {"drop": null}]}}, {"rule": {"family": "inet", "table": "modular_lo", "chain": "mesh_in", "handle": 15, "comment": "no-discard", "expr": [{"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": "ipv4"}}, {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 9}}, {"counter": {"packets": 0, "bytes": 0}}, {"drop": null}]}}, {"rule": {"family": "inet", "table": "modular_lo", "chain": "mesh_in", "handle": 16, "comment": "default-drop", "expr": [{"counter": {"packets": 2, "bytes": 168}}, {"drop": null}]}}, {"rule": {"family": "inet", "table": "modular_lo", "chain": "mesh_out", "handle": 17, "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}, {"accept": null}]}}, {"rule": {"family": "inet", "table": "modular_lo", "chain": "mesh_out", "handle": 18, "expr": [{"accept": null}]}}]}
        """;

    [Fact]
    public void Sums_packets_per_comment_over_the_rules_that_share_it()
    {
        Assert.True(NftablesCounters.TryParse(Captured, out var packets));

        Assert.Equal(3, packets["no-discard"]);
        Assert.Equal(2, packets["default-drop"]);
        Assert.Equal(0, packets["web"]);
        Assert.Equal(0, packets["invalid"]);
        Assert.False(packets.ContainsKey("mesh-dns"), "a rule without a counter has no count");
    }

    [Theory]
    [InlineData("")]
    [InlineData("not json")]
    [InlineData("[]")]
    [InlineData("{\"nftables\": 5}")]
    [InlineData("{\"nftables\": [{\"rule\": {\"comment\": \"x\", \"expr\": [{\"counter\": {\"packets\": \"many\"}}]}}]}")]
    public void Output_that_is_not_nft_json_is_refused_without_an_exception(string json)
    {
        var parsed = NftablesCounters.TryParse(json, out var packets);

        Assert.True(!parsed || packets.Count == 0);
    }

    [Fact]
    public void Rules_without_comments_and_unknown_items_are_skipped()
    {
        const string Json = """{"nftables": [{"metainfo": {}}, {"rule": {"expr": [{"counter": {"packets": 9, "bytes": 1}}]}}, {"rule": {"comment": "a", "expr": [{"counter": {"packets": 4, "bytes": 1}}, {"drop": null}]}}, 7]}""";

        Assert.True(NftablesCounters.TryParse(Json, out var packets));
        Assert.Equal(new Dictionary<string, long> { ["a"] = 4 }, packets);
    }
}
