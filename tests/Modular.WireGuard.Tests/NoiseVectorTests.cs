using System.Buffers.Binary;
using System.Text;
using Microsoft.Extensions.Time.Testing;
using Modular.WireGuard.Conn;
using Modular.WireGuard.Crypto;
using Modular.WireGuard.Noise;

namespace Modular.WireGuard.Tests;

/// <summary>The protocol against independent vectors, the live ones proven against wireguard-go.</summary>
public sealed class NoiseVectorTests
{
    private readonly FakeTimeProvider _time = new(DateTimeOffset.Parse("2026-01-01T00:00:00Z", System.Globalization.CultureInfo.InvariantCulture));

    [Fact]
    public void Constants_match()
    {
        var constants = VectorFile.Root.GetProperty("constants");
        Assert.Equal(constants.GetProperty("construction").GetString(), Encoding.ASCII.GetString(NoiseProtocol.Construction));
        Assert.Equal(constants.GetProperty("identifier").GetString(), Encoding.ASCII.GetString(NoiseProtocol.Identifier));
        Assert.Equal(constants.Hex("initial_chaining_key"), NoiseProtocol.InitialChainingKey);
        Assert.Equal(constants.Hex("initial_hash"), NoiseProtocol.InitialHash);
    }

    [Fact]
    public void Primitives_match()
    {
        var p = VectorFile.Root.GetProperty("primitives");
        var key = p.Hex("key");
        var data = p.Hex("data");
        var output = new byte[32];
        Blake2s.Hash(output, data);
        Assert.Equal(p.Hex("hash"), output);
        Blake2s.Hmac(output, key, data);
        Assert.Equal(p.Hex("hmac"), output);
        var mac = new byte[16];
        Blake2s.Mac(mac, key.AsSpan(0, 16), data);
        Assert.Equal(p.Hex("mac"), mac);

        var t1 = new byte[32];
        var t2 = new byte[32];
        var t3 = new byte[32];
        var kdf3 = p.GetProperty("kdf3").EnumerateArray().Select(e => Convert.FromHexString(e.GetString()!)).ToArray();
        Blake2s.Kdf(key, data, t1);
        Assert.Equal(kdf3[0], t1);
        Blake2s.Kdf(key, data, t1, t2);
        Assert.Equal(kdf3[1], t2);
        Blake2s.Kdf(key, data, t1, t2, t3);
        Assert.Equal(kdf3, new[] { t1, t2, t3 });

        var tai = new byte[12];
        Tai64N.Write(tai, DateTimeOffset.Parse("2024-01-01T00:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(p.Hex("tai64n_2024_01_01"), tai);

        var x = p.GetProperty("xchacha20poly1305");
        var sealedBytes = new byte[x.Hex("plaintext").Length + 16];
        Aead.XSeal(x.Hex("key"), x.Hex("nonce"), x.Hex("plaintext"), x.Hex("ad"), sealedBytes);
        Assert.Equal(x.Hex("ciphertext_and_tag"), sealedBytes);
        var opened = new byte[x.Hex("plaintext").Length];
        Assert.True(Aead.XOpen(x.Hex("key"), x.Hex("nonce"), sealedBytes, x.Hex("ad"), opened));
        Assert.Equal(x.Hex("plaintext"), opened);
        sealedBytes[3] ^= 1;
        Assert.False(Aead.XOpen(x.Hex("key"), x.Hex("nonce"), sealedBytes, x.Hex("ad"), opened));
    }

    [Theory]
    [MemberData(nameof(VectorFile.HandshakeNames), MemberType = typeof(VectorFile))]
    public void Handshake_reproduces_vector(string name)
    {
        var vector = VectorFile.Handshake(name);
        var inputs = vector.GetProperty("inputs");
        var initiation = vector.GetProperty("initiation").Hex("bytes");
        var response = vector.GetProperty("response").Hex("bytes");
        var initiatorIdentity = new StaticIdentity(inputs.Hex("initiator_static_private"));
        var responderIdentity = new StaticIdentity(inputs.Hex("responder_static_private"));
        Assert.Equal(inputs.Hex("initiator_static_public"), initiatorIdentity.PublicKey);
        Assert.Equal(inputs.Hex("responder_static_public"), responderIdentity.PublicKey);

        // Initiator's view of the responder, and the responder's of the initiator.
        var towardResponder = new HandshakeState(responderIdentity.PublicKey);
        towardResponder.ComputeStaticStatic(initiatorIdentity);
        inputs.Hex("preshared_key").CopyTo(towardResponder.PresharedKey, 0);
        var towardInitiator = new HandshakeState(initiatorIdentity.PublicKey);
        towardInitiator.ComputeStaticStatic(responderIdentity);
        inputs.Hex("preshared_key").CopyTo(towardInitiator.PresharedKey, 0);

        // mac1 (and the live cookie case's mac2) are checked by the responder's checker.
        var checker = new CookieChecker(responderIdentity.PublicKey, _time);
        Assert.True(checker.CheckMac1(initiation));
        Assert.True(new CookieChecker(initiatorIdentity.PublicKey, _time).CheckMac1(response));
        Assert.Equal(vector.GetProperty("initiation").Hex("mac1"), initiation.AsSpan(116, 16).ToArray());

        var initiatorEphemeral = inputs.HexOrNull("initiator_ephemeral_private");
        if (initiatorEphemeral is not null)
        {
            var built = new byte[MessageLayout.InitiationSize];
            Assert.True(NoiseProtocol.CreateInitiation(towardResponder, initiatorIdentity, (uint)inputs.GetProperty("initiator_sender_index").GetInt64(), inputs.Hex("timestamp_tai64n"), built, initiatorEphemeral));
            var generator = new CookieGenerator(responderIdentity.PublicKey, _time);
            generator.AddMacs(built);
            Assert.Equal(initiation.AsSpan(0, 132).ToArray(), built.AsSpan(0, 132).ToArray());
        }

        var consumed = NoiseProtocol.ConsumeInitiation(initiation, responderIdentity, pub => pub.Span.SequenceEqual(initiatorIdentity.PublicKey) ? towardInitiator : null, _time, TimeSpan.Zero);
        Assert.Same(towardInitiator, consumed);
        Assert.Equal(inputs.Hex("timestamp_tai64n"), towardInitiator.LastTimestamp);

        // A replayed initiation (same timestamp) is refused.
        var replayState = new HandshakeState(initiatorIdentity.PublicKey);
        replayState.ComputeStaticStatic(responderIdentity);
        inputs.Hex("timestamp_tai64n").CopyTo(replayState.LastTimestamp, 0);
        Assert.Null(NoiseProtocol.ConsumeInitiation(initiation, responderIdentity, _ => replayState, _time, TimeSpan.Zero));

        var responderEphemeral = inputs.HexOrNull("responder_ephemeral_private");
        byte[] responderSend;
        byte[] responderReceive;
        if (responderEphemeral is not null)
        {
            var built = new byte[MessageLayout.ResponseSize];
            Assert.True(NoiseProtocol.CreateResponse(towardInitiator, (uint)inputs.GetProperty("responder_sender_index").GetInt64(), built, responderEphemeral));
            new CookieGenerator(initiatorIdentity.PublicKey, _time).AddMacs(built);
            Assert.Equal(response, built);
            var keys = NoiseProtocol.DeriveSessionKeys(towardInitiator)!.Value;
            Assert.False(keys.IsInitiator);
            responderSend = keys.Send;
            responderReceive = keys.Receive;
            Assert.Equal(vector.GetProperty("transport_keys").Hex("initiator_receiving"), responderSend);
            Assert.Equal(vector.GetProperty("transport_keys").Hex("initiator_sending"), responderReceive);
        }

        if (initiatorEphemeral is not null)
        {
            lock (towardResponder.Lock)
            {
                Assert.True(NoiseProtocol.ConsumeResponse(towardResponder, initiatorIdentity, response));
            }

            var keys = NoiseProtocol.DeriveSessionKeys(towardResponder)!.Value;
            Assert.True(keys.IsInitiator);
            Assert.Equal(vector.GetProperty("transport_keys").Hex("initiator_sending"), keys.Send);
            Assert.Equal(vector.GetProperty("transport_keys").Hex("initiator_receiving"), keys.Receive);
        }
    }

    [Theory]
    [MemberData(nameof(VectorFile.HandshakeNames), MemberType = typeof(VectorFile))]
    public void Transport_messages_decrypt_and_reencrypt(string name)
    {
        var vector = VectorFile.Handshake(name);
        var keys = vector.GetProperty("transport_keys");
        foreach (var message in vector.GetProperty("transport").EnumerateArray())
        {
            var fromInitiator = message.GetProperty("direction").GetString() == "initiator_to_responder";
            var key = keys.Hex(fromInitiator ? "initiator_sending" : "initiator_receiving");
            var packet = message.Hex("packet");
            var counter = (ulong)message.GetProperty("counter").GetInt64();
            var plaintext = message.Hex("plaintext");
            var paddedLength = message.GetProperty("padded_length").GetInt32();
            Assert.Equal(MessageLayout.TypeTransport, MessageLayout.ReadType(packet));
            Assert.Equal((uint)message.GetProperty("receiver_index").GetInt64(), BinaryPrimitives.ReadUInt32LittleEndian(packet.AsSpan(4)));
            Assert.Equal(counter, BinaryPrimitives.ReadUInt64LittleEndian(packet.AsSpan(8)));

            var opened = new byte[packet.Length - 32];
            Assert.True(Aead.Open(key, counter, packet.AsSpan(16), default, opened));
            Assert.Equal(paddedLength, opened.Length);
            Assert.Equal(plaintext, opened.AsSpan(0, plaintext.Length).ToArray());
            Assert.True(opened.AsSpan(plaintext.Length).IndexOfAnyExcept((byte)0) < 0);

            var padded = new byte[paddedLength];
            plaintext.CopyTo(padded, 0);
            var sealedBytes = new byte[paddedLength + 16];
            Aead.Seal(key, counter, padded, default, sealedBytes);
            Assert.Equal(packet.AsSpan(16).ToArray(), sealedBytes);

            packet[^1] ^= 0x80;
            Assert.False(Aead.Open(key, counter, packet.AsSpan(16), default, opened));
        }
    }

    [Theory]
    [InlineData("deterministic_cookie")]
    [InlineData("live_cookie")]
    public void Cookie_reply_decrypts_and_gives_mac2(string name)
    {
        var vector = VectorFile.Cookie(name);
        var responderPublic = vector.Hex("responder_static_public");
        var triggering = vector.Hex("triggering_initiation");
        var cookieKey = new byte[32];
        CookieConstants.CookieKey(responderPublic, cookieKey);
        Assert.Equal(vector.Hex("cookie_key"), cookieKey);
        Assert.Equal(vector.Hex("triggering_mac1"), triggering.AsSpan(116, 16).ToArray());

        // The initiator re-creates the mac1 it sent (same bytes) so it knows the AD of the reply.
        var generator = new CookieGenerator(responderPublic, _time);
        var resent = (byte[])triggering.Clone();
        generator.AddMacs(resent);
        Assert.Equal(vector.Hex("triggering_mac1"), generator.LastMac1.ToArray());
        Assert.True(generator.ConsumeReply(vector.Hex("cookie_reply")));

        var withMac2 = vector.Hex("initiation_with_mac2");
        var rebuilt = (byte[])withMac2.Clone();
        generator.AddMacs(rebuilt);
        Assert.Equal(vector.Hex("mac2"), rebuilt.AsSpan(132, 16).ToArray());
        Assert.Equal(withMac2, rebuilt);

        // A tampered reply is refused.
        var tampered = vector.Hex("cookie_reply");
        tampered[40] ^= 1;
        Assert.False(new CookieGenerator(responderPublic, _time).ConsumeReply(tampered));

        // Cookies expire after two minutes: mac2 is zero again.
        _time.Advance(TimeSpan.FromSeconds(121));
        generator.AddMacs(rebuilt);
        Assert.True(rebuilt.AsSpan(132, 16).IndexOfAnyExcept((byte)0) < 0);
    }

    [Theory]
    [InlineData("probe_no_mac2_before")]
    [InlineData("probe_no_mac2_after")]
    public void Live_cookie_replies_to_probes_decrypt_to_the_cookie_that_made_mac2(string probe)
    {
        using var live = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "Vectors", "wireguard-live-cookie.json")));
        var record = live.RootElement;
        var responderPublic = VectorFile.Cookie("live_cookie").Hex("responder_static_public");
        var generator = new CookieGenerator(responderPublic, _time);

        // Our macs on the probe are the bytes wireguard-go saw; its answer is bound to that mac1.
        var sent = record.Hex(probe);
        var rebuilt = (byte[])sent.Clone();
        generator.AddMacs(rebuilt);
        Assert.Equal(sent, rebuilt);
        Assert.True(generator.ConsumeReply(record.Hex(probe + "_answer")));

        // The cookie inside is the one whose mac2 wireguard-go accepted.
        var accepted = record.Hex("m2");
        var withMac2 = (byte[])accepted.Clone();
        generator.AddMacs(withMac2);
        Assert.Equal(accepted, withMac2);
    }

    [Fact]
    public void Responder_cookie_reply_is_byte_exact()
    {
        var vector = VectorFile.Cookie("deterministic_cookie");
        var source = vector.Hex("source_bytes");
        var endpoint = WgEndpoint.FromIPv4(source.AsSpan(0, 4), BinaryPrimitives.ReadUInt16LittleEndian(source.AsSpan(4)));
        var checker = new CookieChecker(vector.Hex("responder_static_public"), _time);
        checker.SetSecret(vector.Hex("secret"));
        var reply = new byte[MessageLayout.CookieReplySize];
        checker.CreateReply(vector.Hex("triggering_initiation"), endpoint, reply, vector.Hex("nonce"));
        Assert.Equal(vector.Hex("cookie_reply"), reply);
        Assert.True(checker.CheckMac1(vector.Hex("initiation_with_mac2")));
        Assert.True(checker.CheckMac2(vector.Hex("initiation_with_mac2"), endpoint));
        Assert.False(checker.CheckMac2(vector.Hex("triggering_initiation"), endpoint));
        Assert.False(checker.CheckMac2(vector.Hex("initiation_with_mac2"), endpoint with { Port = (ushort)(endpoint.Port + 1) }));
    }
}
