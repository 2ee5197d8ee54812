using System.Net;
using Microsoft.Extensions.Time.Testing;
using Modular.WireGuard.Conn;
using Modular.WireGuard.Noise;

namespace Modular.WireGuard.Tests;

public sealed class CookieTests
{
    private readonly FakeTimeProvider _time = new();
    private readonly byte[] _responderPublic = VectorFile.Cookie("deterministic_cookie").Hex("responder_static_public");
    private readonly byte[] _initiation = VectorFile.Cookie("deterministic_cookie").Hex("triggering_initiation");
    private readonly WgEndpoint _source = WgEndpoint.FromIPEndPoint(IPEndPoint.Parse("198.18.0.2:40000"));

    private (CookieChecker Checker, CookieGenerator Generator, byte[] Message) RoundTrip()
    {
        var checker = new CookieChecker(_responderPublic, _time);
        var generator = new CookieGenerator(_responderPublic, _time);
        var message = (byte[])_initiation.Clone();
        generator.AddMacs(message);
        Assert.False(checker.CheckMac2(message, _source));
        var reply = new byte[MessageLayout.CookieReplySize];
        checker.CreateReply(message, _source, reply);
        Assert.True(generator.ConsumeReply(reply));
        generator.AddMacs(message);
        return (checker, generator, message);
    }

    [Fact]
    public void A_cookie_proves_the_source_address()
    {
        var (checker, _, message) = RoundTrip();
        Assert.True(checker.CheckMac2(message, _source));
        Assert.False(checker.CheckMac2(message, WgEndpoint.FromIPEndPoint(IPEndPoint.Parse("198.18.0.3:40000"))));
        Assert.False(checker.CheckMac2(message, WgEndpoint.FromIPEndPoint(IPEndPoint.Parse("[fd00::2]:40000"))));
    }

    [Fact]
    public void The_cookie_secret_rotates_after_two_minutes()
    {
        var (checker, _, message) = RoundTrip();
        _time.Advance(TimeSpan.FromSeconds(119));
        Assert.True(checker.CheckMac2(message, _source));
        _time.Advance(TimeSpan.FromSeconds(2));
        Assert.False(checker.CheckMac2(message, _source));
    }

    [Fact]
    public void A_reply_to_another_message_is_refused()
    {
        var checker = new CookieChecker(_responderPublic, _time);
        var generator = new CookieGenerator(_responderPublic, _time);
        var sent = (byte[])_initiation.Clone();
        generator.AddMacs(sent);
        var other = (byte[])_initiation.Clone();
        other[10] ^= 1; // a different message, so a different mac1 (the reply's AD)
        new CookieGenerator(_responderPublic, _time).AddMacs(other);
        var reply = new byte[MessageLayout.CookieReplySize];
        checker.CreateReply(other, _source, reply);
        Assert.False(generator.ConsumeReply(reply));
        Assert.False(new CookieGenerator(_responderPublic, _time).ConsumeReply(reply)); // nothing sent yet
    }
}
