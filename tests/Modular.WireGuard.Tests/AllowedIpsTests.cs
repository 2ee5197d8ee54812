using System.Net;
using Modular.WireGuard.Routing;

namespace Modular.WireGuard.Tests;

public sealed class AllowedIpsTests
{
    private sealed class Owner(string name)
    {
        public override string ToString() => name;
    }

    private static byte[] Bytes(string address) => IPAddress.Parse(address).GetAddressBytes();

    [Fact]
    public void Longest_prefix_wins_for_both_families()
    {
        var table = new AllowedIps<Owner>();
        Owner a = new("a"), b = new("b"), c = new("c"), d = new("d");
        table.Insert(IPNetwork.Parse("10.0.0.0/8"), a);
        table.Insert(IPNetwork.Parse("10.1.0.0/16"), b);
        table.Insert(IPNetwork.Parse("10.1.2.3/32"), c);
        table.Insert(IPNetwork.Parse("fd00::/8"), d);
        table.Insert(IPNetwork.Parse("fd00:1::/32"), b);
        Assert.Same(a, table.Lookup(Bytes("10.200.0.1")));
        Assert.Same(b, table.Lookup(Bytes("10.1.9.9")));
        Assert.Same(c, table.Lookup(Bytes("10.1.2.3")));
        Assert.Same(b, table.Lookup(Bytes("10.1.2.4")));
        Assert.Null(table.Lookup(Bytes("11.0.0.1")));
        Assert.Same(d, table.Lookup(Bytes("fd12::1")));
        Assert.Same(b, table.Lookup(Bytes("fd00:1::5")));
        Assert.Null(table.Lookup(Bytes("fe80::1")));
        Assert.Null(table.Lookup([1, 2, 3])); // neither 4 nor 16 bytes
        Assert.Equal(5, table.Count);
    }

    [Fact]
    public void Default_routes_and_replacing_an_owner()
    {
        var table = new AllowedIps<Owner>();
        Owner a = new("a"), b = new("b");
        table.Insert(IPNetwork.Parse("0.0.0.0/0"), a);
        table.Insert(IPNetwork.Parse("::/0"), a);
        Assert.Same(a, table.Lookup(Bytes("8.8.8.8")));
        Assert.Same(a, table.Lookup(Bytes("2001:db8::1")));
        table.Insert(IPNetwork.Parse("0.0.0.0/0"), b);
        Assert.Same(b, table.Lookup(Bytes("8.8.8.8")));
        Assert.Equal([IPNetwork.Parse("::/0")], table.PrefixesOf(a));
        Assert.Equal(2, table.Count);
    }

    [Fact]
    public void Remove_and_RemoveAll()
    {
        var table = new AllowedIps<Owner>();
        Owner a = new("a"), b = new("b");
        table.Insert(IPNetwork.Parse("192.168.0.0/16"), a);
        table.Insert(IPNetwork.Parse("192.168.1.0/24"), b);
        table.Insert(IPNetwork.Parse("192.168.2.0/24"), a);
        Assert.False(table.Remove(IPNetwork.Parse("192.168.1.0/24"), a));
        Assert.True(table.Remove(IPNetwork.Parse("192.168.1.0/24"), b));
        Assert.Same(a, table.Lookup(Bytes("192.168.1.1")));
        table.RemoveAll(a);
        Assert.Null(table.Lookup(Bytes("192.168.2.1")));
        Assert.Equal(0, table.Count);
        Assert.Empty(table.PrefixesOf(a));
    }

    [Fact]
    public void Matches_a_linear_scan_on_random_prefixes()
    {
        var random = new Random(42);
        var table = new AllowedIps<Owner>();
        var owners = Enumerable.Range(0, 20).Select(i => new Owner(i.ToString(System.Globalization.CultureInfo.InvariantCulture))).ToArray();
        var reference = new Dictionary<IPNetwork, Owner>();
        for (var i = 0; i < 3000; i++)
        {
            var address = new byte[4];
            random.NextBytes(address);
            address[0] = (byte)(10 + (address[0] % 3)); // crowd a few /8s so prefixes nest
            var prefix = IPPrefix.Canonical(new IPAddress(address), random.Next(4, 33));
            var owner = owners[random.Next(owners.Length)];
            table.Insert(prefix, owner);
            reference[prefix] = owner;
        }

        Assert.Equal(reference.Count, table.Count);
        for (var i = 0; i < 1500; i++)
        {
            var address = new byte[4];
            random.NextBytes(address);
            address[0] = (byte)(10 + (address[0] % 4));
            var ip = new IPAddress(address);
            var expected = reference.Where(pair => pair.Key.Contains(ip)).OrderByDescending(pair => pair.Key.PrefixLength).Select(pair => pair.Value).FirstOrDefault();
            Assert.Same(expected, table.Lookup(address));
        }
    }

    [Theory]
    [InlineData("10.1.2.3/24", "10.1.2.0/24")]
    [InlineData("10.1.2.3", "10.1.2.3/32")]
    [InlineData("fd00::1/64", "fd00::/64")]
    [InlineData("0.0.0.0/0", "0.0.0.0/0")]
    public void Prefix_parsing_clears_host_bits(string text, string expected)
    {
        Assert.True(IPPrefix.TryParse(text, out var prefix));
        Assert.Equal(IPNetwork.Parse(expected), prefix);
    }

    [Theory]
    [InlineData("")]
    [InlineData("10.0.0.0/33")]
    [InlineData("10.0.0.0/-1")]
    [InlineData("fd00::/129")]
    [InlineData("not-an-ip/8")]
    [InlineData("10.0.0.0/ 8")]
    [InlineData("fe80::1%eth0/64")]
    public void Bad_prefixes_are_refused(string text) => Assert.False(IPPrefix.TryParse(text, out _));
}
