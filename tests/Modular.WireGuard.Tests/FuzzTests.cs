using System.Net;
using Microsoft.Extensions.Time.Testing;
using Modular.WireGuard.Conn;
using Modular.WireGuard.Noise;
using Modular.Testing.WireGuard;

namespace Modular.WireGuard.Tests;

/// <summary>Random and mutated messages: every one is refused or dropped, none throws, the device keeps working.</summary>
public sealed class FuzzTests
{
    private static byte[] Mutate(Random random, byte[] original)
    {
        var data = (byte[])original.Clone();
        if (data.Length == 0)
        {
            return RandomBytes(random, random.Next(1, 100));
        }

        switch (random.Next(5))
        {
            case 0:
                data[random.Next(data.Length)] ^= (byte)(1 << random.Next(8));
                break;
            case 1:
                for (var i = 0; i < 1 + random.Next(8); i++)
                {
                    data[random.Next(data.Length)] = (byte)random.Next(256);
                }

                break;
            case 2:
                data = data.AsSpan(0, random.Next(data.Length)).ToArray();
                break;
            case 3:
                var longer = new byte[data.Length + 1 + random.Next(64)];
                data.CopyTo(longer, 0);
                random.NextBytes(longer.AsSpan(data.Length));
                data = longer;
                break;
            default:
                random.NextBytes(data.AsSpan(Math.Min(4, data.Length)));
                break;
        }

        return data;
    }

    [Fact]
    public void Parsers_refuse_random_and_mutated_messages()
    {
        var random = new Random(2024);
        var time = new FakeTimeProvider();
        var vector = VectorFile.Handshake("deterministic_psk");
        var inputs = vector.GetProperty("inputs");
        var responder = new StaticIdentity(inputs.Hex("responder_static_private"));
        var initiator = new StaticIdentity(inputs.Hex("initiator_static_private"));
        var initiation = vector.GetProperty("initiation").Hex("bytes");
        var response = vector.GetProperty("response").Hex("bytes");
        var cookieReply = VectorFile.Cookie("deterministic_cookie").Hex("cookie_reply");
        var checker = new CookieChecker(responder.PublicKey, time);
        var generator = new CookieGenerator(responder.PublicKey, time);
        generator.AddMacs(VectorFile.Cookie("deterministic_cookie").Hex("triggering_initiation").ToArray());
        var accepted = 0;

        for (var i = 0; i < 6000; i++)
        {
            var source = random.Next(4) switch
            {
                0 => initiation,
                1 => response,
                2 => cookieReply,
                _ => RandomBytes(random, random.Next(0, 200)),
            };
            var message = Mutate(random, source);

            // Whatever is accepted must be authentic: the bytes each check covers are unchanged
            // (the sender index is covered by mac1, not by the Noise AEAD).
            var state = new HandshakeState(initiator.PublicKey);
            state.ComputeStaticStatic(responder);
            if (NoiseProtocol.ConsumeInitiation(message, responder, _ => state, time, TimeSpan.Zero) is not null
                && !(message.Length == 148 && message.AsSpan(0, 4).SequenceEqual(initiation.AsSpan(0, 4)) && message.AsSpan(8, 108).SequenceEqual(initiation.AsSpan(8, 108))))
            {
                accepted++;
            }

            var waiting = new HandshakeState(responder.PublicKey) { Stage = HandshakeStage.InitiationCreated };
            lock (waiting.Lock)
            {
                if (NoiseProtocol.ConsumeResponse(waiting, initiator, message))
                {
                    accepted++;
                }
            }

            // The receiver index is not authenticated (the device matches it to a handshake); the rest is.
            if (generator.ConsumeReply(message) && !(message.AsSpan(0, 4).SequenceEqual(cookieReply.AsSpan(0, 4)) && message.AsSpan(8).SequenceEqual(cookieReply.AsSpan(8))))
            {
                accepted++;
            }

            if (message.Length >= 32 && checker.CheckMac1(message)
                && !(message.Length == 148 && message.AsSpan(0, 132).SequenceEqual(initiation.AsSpan(0, 132))))
            {
                accepted++;
            }

            checker.CheckMac2(message, WgEndpoint.FromIPv4([198, 18, 0, 1], 1));
            MessageLayout.ReadType(message);
        }

        Assert.Equal(0, accepted);
    }

    [Fact]
    public void Device_survives_thousands_of_bad_datagrams_and_keeps_working()
    {
        using var pair = new DevicePair();

        // Capture real messages of every type to mutate.
        var captured = new System.Collections.Concurrent.ConcurrentBag<byte[]>();
        pair.Binds.Network.Filter = (_, _, data) =>
        {
            captured.Add(data.ToArray());
            return true;
        };
        Assert.NotNull(pair.AToB(TestPackets.IPv4("100.64.0.1", "100.64.0.2")));
        Assert.NotNull(pair.BToA(TestPackets.IPv4("100.64.0.2", "100.64.0.1")));
        pair.Binds.Network.Filter = null;
        var samples = captured.ToArray();
        Assert.Contains(samples, s => s[0] == MessageLayout.TypeInitiation);
        Assert.Contains(samples, s => s[0] == MessageLayout.TypeTransport);

        var random = new Random(99);
        var buffer = new byte[PacketBuffers.MaxSegmentSize];
        var from = WgEndpoint.FromIPEndPoint(IPEndPoint.Parse("198.18.0.66:6666"));
        var delivered = 0;
        for (var i = 0; i < 5000; i++)
        {
            var message = random.Next(3) == 0 ? RandomBytes(random, random.Next(0, 1600)) : Mutate(random, samples[random.Next(samples.Length)]);
            if (random.Next(10) == 0 && message.Length > 0)
            {
                message[0] = (byte)random.Next(1, 5); // plausible type, garbage body
            }

            message.CopyTo(buffer, 0);
            if (pair.B.ProcessDatagram(buffer, message.Length, from) > 0)
            {
                delivered++;
            }
        }

        // Oversized and negative-looking sizes are refused too.
        Assert.Equal(0, pair.B.ProcessDatagram(new byte[10], 20, from));
        Assert.Equal(0, delivered);

        // The same through the receive thread (bind hook): the loop must survive.
        for (var i = 0; i < 2000; i++)
        {
            pair.B.BindHook.Inject(Mutate(random, samples[random.Next(samples.Length)]), IPEndPoint.Parse("198.18.0.66:6666"));
        }

        var ping = TestPackets.IPv4("100.64.0.1", "100.64.0.2", 77, 0x99);
        pair.TunA.Inject(ping);
        byte[]? received;
        do
        {
            received = pair.TunB.TryReadWritten(DevicePair.Wait);
        }
        while (received is not null && !received.AsSpan().SequenceEqual(ping));

        Assert.Equal(ping, received);
    }

    private static byte[] RandomBytes(Random random, int length)
    {
        var bytes = new byte[length];
        random.NextBytes(bytes);
        return bytes;
    }
}
