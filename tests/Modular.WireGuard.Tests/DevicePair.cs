using System.Net;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Modular.Abstractions.WireGuard;
using Modular.Testing.WireGuard;
using Modular.WireGuard.Crypto;
using Modular.WireGuard.Device;

namespace Modular.WireGuard.Tests;

/// <summary>
/// Two devices in one process, wired by an in-memory network, on a fake clock: A is 100.64.0.1
/// at 198.18.0.1:51820, B is 100.64.0.2 at 198.18.0.2:51821.
/// </summary>
internal sealed class DevicePair : IDisposable
{
    public static readonly TimeSpan Wait = TimeSpan.FromSeconds(10);

    public DevicePair(bool configureEndpoints = true, WgKey? presharedKey = null, ILoggerFactory? loggerFactory = null)
    {
        PrivateA = NewPrivateKey();
        PrivateB = NewPrivateKey();
        A = new WgDevice(TunA, Binds.A, loggerFactory ?? NullLoggerFactory.Instance, Time);
        B = new WgDevice(TunB, Binds.B, loggerFactory ?? NullLoggerFactory.Instance, Time);
        A.SetPrivateKey(PrivateA);
        B.SetPrivateKey(PrivateB);
        A.SetListenPort(51820);
        B.SetListenPort(51821);
        A.SetPeer(new WgPeerConfig(B.PublicKey, [IPNetwork.Parse("100.64.0.2/32"), IPNetwork.Parse("fd00::2/128")], configureEndpoints ? IPEndPoint.Parse("198.18.0.2:51821") : null, presharedKey));
        B.SetPeer(new WgPeerConfig(A.PublicKey, [IPNetwork.Parse("100.64.0.1/32"), IPNetwork.Parse("fd00::1/128")], configureEndpoints ? IPEndPoint.Parse("198.18.0.1:51820") : null, presharedKey));
        A.Up();
        B.Up();
    }

    public FakeTimeProvider Time { get; } = new(DateTimeOffset.Parse("2026-03-01T12:00:00Z", System.Globalization.CultureInfo.InvariantCulture));

    public InMemoryBindPair Binds { get; } = new();

    public InMemoryTun TunA { get; } = new("memA");

    public InMemoryTun TunB { get; } = new("memB");

    public WgDevice A { get; }

    public WgDevice B { get; }

    public WgKey PrivateA { get; }

    public WgKey PrivateB { get; }

    public static WgKey NewPrivateKey()
    {
        Span<byte> key = stackalloc byte[32];
        Curve25519.GeneratePrivateKey(key);
        return new WgKey(key);
    }

    /// <summary>Sends A -> B through the tunnel and returns what B's TUN received (null on timeout).</summary>
    public byte[]? AToB(byte[] packet)
    {
        TunA.Inject(packet);
        return TunB.TryReadWritten(Wait);
    }

    public byte[]? BToA(byte[] packet)
    {
        TunB.Inject(packet);
        return TunA.TryReadWritten(Wait);
    }

    /// <summary>
    /// Sends one packet each way and waits until both senders have run their "data sent" timer
    /// rules. A sender's TUN thread arms NEW_HANDSHAKE just after its send returns, which can be
    /// after the other side has already answered; a timer test that moves the clock before that
    /// would see a stray handshake.
    /// </summary>
    public void ExchangeAndSettle()
    {
        var peerOnA = A.FindPeer(B.PublicKey)!;
        var peerOnB = B.FindPeer(A.PublicKey)!;
        Assert.NotNull(AToB(TestPackets.IPv4("100.64.0.1", "100.64.0.2")));
        Assert.True(WaitUntil(() => peerOnA.NewHandshake.IsPending), "A's send bookkeeping");
        Assert.NotNull(BToA(TestPackets.IPv4("100.64.0.2", "100.64.0.1")));
        Assert.True(WaitUntil(() => peerOnB.NewHandshake.IsPending && !peerOnA.NewHandshake.IsPending), "B's send bookkeeping");
    }

    /// <summary>Polls until <paramref name="condition"/> holds (other threads do the work) or the wait ends.</summary>
    public static bool WaitUntil(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow + Wait;
        while (DateTime.UtcNow < deadline)
        {
            if (condition())
            {
                return true;
            }

            Thread.Sleep(5);
        }

        return condition();
    }

    /// <summary>
    /// Advances the fake clock in small steps (so jittered timers fire apart, as they would in real
    /// time), letting the device threads work between steps, until <paramref name="condition"/> holds.
    /// </summary>
    public bool AdvanceUntil(Func<bool> condition, TimeSpan fakeLimit)
    {
        var step = TimeSpan.FromMilliseconds(50);
        for (var elapsed = TimeSpan.Zero; elapsed < fakeLimit; elapsed += step)
        {
            var deadline = DateTime.UtcNow + TimeSpan.FromMilliseconds(20);
            while (DateTime.UtcNow < deadline)
            {
                if (condition())
                {
                    return true;
                }

                Thread.Sleep(1);
            }

            Time.Advance(step);
        }

        return condition();
    }

    public void Dispose()
    {
        A.Dispose();
        B.Dispose();
    }
}
