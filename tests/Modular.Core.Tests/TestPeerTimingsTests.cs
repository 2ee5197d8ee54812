using Modular.Core.Peers;

namespace Modular.Core.Tests;

/// <summary>The E2E tests' liveness timing hook (MODULAR_TEST_PEER_TIMINGS): what it sets, and every value it refuses.</summary>
public sealed class TestPeerTimingsTests
{
    [Fact]
    public void The_named_timers_are_set_and_the_rest_keep_their_defaults()
    {
        var options = TestPeerTimings.Apply(new PeerConnOptions(ForceRelay: true), "keepalive=5s, silent=15, recheck=10s,probe=6.5s,checks=2s,handshake=10s");

        Assert.True(options.ForceRelay);
        Assert.Equal(TimeSpan.FromSeconds(5), options.PersistentKeepalive);
        Assert.Equal(TimeSpan.FromSeconds(15), options.Silent);
        Assert.Equal(TimeSpan.FromSeconds(10), options.Recheck);
        Assert.Equal(TimeSpan.FromSeconds(6.5), options.SilenceProbe);
        Assert.Equal(TimeSpan.FromSeconds(2), options.Checks);
        Assert.Equal(TimeSpan.FromSeconds(10), options.FirstHandshake);
        Assert.Equal(TimeSpan.FromSeconds(15), options.DirectProof); // keepalive + first handshake, as without the hook
        Assert.Equal(new PeerConnOptions().Offers, options.Offers);
    }

    [Fact]
    public void Keepalive_alone_moves_the_timers_derived_from_it()
    {
        var options = TestPeerTimings.Apply(new PeerConnOptions(), "keepalive=5");

        Assert.Equal(TimeSpan.FromSeconds(30), options.Silent); // 3 keepalives + 15 s
        Assert.Equal(new PeerConnOptions().Recheck, options.Recheck);
    }

    [Theory]
    [InlineData("", "is not key=seconds")]
    [InlineData("keepalive", "is not key=seconds")]
    [InlineData("=5", "is not key=seconds")]
    [InlineData("keepalive=", "is not a number of seconds")]
    [InlineData("keepalive=five", "is not a number of seconds")]
    [InlineData("keepalive=-5", "is not a number of seconds")]
    [InlineData("keepalive=5m", "is not a number of seconds")]
    [InlineData("keepalive=0.5", "outside 1 s .. 10 min")]
    [InlineData("recheck=3600", "outside 1 s .. 10 min")]
    [InlineData("keepalive=5,keepalive=6", "'keepalive' is given twice")]
    [InlineData("stale=5", "unknown key 'stale'")]
    [InlineData("Keepalive=5", "unknown key 'Keepalive'")]
    [InlineData("keepalive=5,silent=10", "must be longer than two keepalive intervals")]
    [InlineData("silent=50", "must be longer than two keepalive intervals")] // the default keepalive is 25 s
    [InlineData("probe=5", "longer than WireGuard's 5 s initiation retry")]
    [InlineData("handshake=4", "longer than WireGuard's 5 s initiation retry")]
    public void Nonsense_is_refused_naming_the_variable_and_the_problem(string spec, string problem)
    {
        var e = Assert.Throws<InvalidDataException>(() => TestPeerTimings.Apply(new PeerConnOptions(), spec));

        Assert.StartsWith("MODULAR_TEST_PEER_TIMINGS: ", e.Message, StringComparison.Ordinal);
        Assert.Contains(problem, e.Message, StringComparison.Ordinal);
    }
}
