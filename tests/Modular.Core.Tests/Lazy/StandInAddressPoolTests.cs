using System.Net;
using Modular.Core.Lazy;

namespace Modular.Core.Tests.Lazy;

public sealed class StandInAddressPoolTests
{
    [Fact]
    public void Addresses_start_at_127_128_0_1_and_skip_dot_0_and_dot_255()
    {
        var pool = new StandInAddressPool();
        var addresses = Enumerable.Range(0, 600).Select(_ => pool.Rent()).ToList();

        Assert.Equal(IPAddress.Parse("127.128.0.1"), StandInAddressPool.ToIPAddress(addresses[0]));
        Assert.Equal(IPAddress.Parse("127.128.0.254"), StandInAddressPool.ToIPAddress(addresses[253]));
        Assert.Equal(IPAddress.Parse("127.128.1.1"), StandInAddressPool.ToIPAddress(addresses[254]));
        Assert.Equal(addresses.Count, addresses.Distinct().Count());
        Assert.All(addresses, a => Assert.True(StandInAddressPool.Contains(a) && (a & 0xFF) is not 0 and not 255));
    }

    [Fact]
    public void Stand_ins_and_relay_proxies_take_disjoint_halves_of_the_9_to_the_last_address()
    {
        var (standInsFirst, standInsLast, standIns) = Exhaust(new StandInAddressPool());
        var (proxiesFirst, proxiesLast, proxies) = Exhaust(StandInAddressPool.RelayProxies());

        Assert.Equal(IPAddress.Parse("127.128.0.1"), StandInAddressPool.ToIPAddress(standInsFirst));
        Assert.Equal(IPAddress.Parse("127.191.255.254"), StandInAddressPool.ToIPAddress(standInsLast));
        Assert.Equal(IPAddress.Parse("127.192.0.1"), StandInAddressPool.ToIPAddress(proxiesFirst));
        Assert.Equal(IPAddress.Parse("127.255.255.254"), StandInAddressPool.ToIPAddress(proxiesLast));
        Assert.Equal(64 * 256 * 254, standIns);
        Assert.Equal(64 * 256 * 254, proxies);
        Assert.False(StandInAddressPool.IsRelayProxy(standInsLast));
        Assert.True(StandInAddressPool.IsRelayProxy(proxiesFirst));
    }

    // Rents until the pool refuses; returns the first and last address and how many there were.
    private static (uint First, uint Last, int Count) Exhaust(StandInAddressPool pool)
    {
        var first = pool.Rent();
        var last = first;
        var count = 1;
        while (true)
        {
            try
            {
                last = pool.Rent();
                count++;
            }
            catch (InvalidOperationException)
            {
                return (first, last, count);
            }
        }
    }

    [Fact]
    public void Freed_addresses_come_back_oldest_first()
    {
        var pool = new StandInAddressPool();
        var first = pool.Rent();
        var second = pool.Rent();
        var third = pool.Rent();

        pool.Return(second);
        pool.Return(first);

        Assert.Equal(second, pool.Rent());
        Assert.Equal(first, pool.Rent());
        Assert.Equal(third + 1, pool.Rent());
    }

    [Theory]
    [InlineData("127.128.0.0", true)]
    [InlineData("127.255.255.255", true)]
    [InlineData("127.127.255.255", false)]
    [InlineData("127.0.0.1", false)]
    [InlineData("128.128.0.1", false)]
    public void Contains_is_exactly_127_128_0_0_slash_9(string address, bool inside)
    {
        var value = System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(IPAddress.Parse(address).GetAddressBytes());
        Assert.Equal(inside, StandInAddressPool.Contains(value));
        Assert.Equal(address.StartsWith("127.", StringComparison.Ordinal), StandInAddressPool.IsLoopback(value));
    }
}
