using Modular.Abstractions.WireGuard;
using Modular.Control.Crypto;

namespace Modular.Server.Tests;

public sealed class EnvelopeTests
{
    [Fact]
    public void Opens_only_for_the_right_pair_purpose_and_bytes()
    {
        using var alice = X25519KeyPair.Generate();
        using var bob = X25519KeyPair.Generate();
        using var eve = X25519KeyPair.Generate();
        var message = "hello bob"u8.ToArray();
        var box = Envelope.Seal(alice, bob.PublicKey, Envelope.Purposes.Signal, message);

        Assert.True(Envelope.TryOpen(bob, alice.PublicKey, Envelope.Purposes.Signal, box, out var opened));
        Assert.Equal(message, opened);

        Assert.False(Envelope.TryOpen(eve, alice.PublicKey, Envelope.Purposes.Signal, box, out _)); // not the recipient
        Assert.False(Envelope.TryOpen(bob, eve.PublicKey, Envelope.Purposes.Signal, box, out _)); // wrong claimed sender
        Assert.False(Envelope.TryOpen(bob, alice.PublicKey, Envelope.Purposes.Management, box, out _)); // other protocol
        Assert.False(Envelope.TryOpen(alice, bob.PublicKey, Envelope.Purposes.Signal, box, out _)); // reflected back
        var tampered = (byte[])box.Clone();
        tampered[30] ^= 1;
        Assert.False(Envelope.TryOpen(bob, alice.PublicKey, Envelope.Purposes.Signal, tampered, out _));
        Assert.False(Envelope.TryOpen(bob, alice.PublicKey, Envelope.Purposes.Signal, box.AsSpan(0, 10), out _));
        Assert.False(Envelope.TryOpen(bob, default(WgKey), Envelope.Purposes.Signal, box, out _)); // low-order key
    }

    [Fact]
    public void Each_seal_uses_a_fresh_nonce()
    {
        using var alice = X25519KeyPair.Generate();
        using var bob = X25519KeyPair.Generate();
        var one = Envelope.Seal(alice, bob.PublicKey, Envelope.Purposes.Signal, [1, 2, 3]);
        var two = Envelope.Seal(alice, bob.PublicKey, Envelope.Purposes.Signal, [1, 2, 3]);
        Assert.NotEqual(one, two);
        Assert.Equal(3 + Envelope.Overhead, one.Length);
    }

    [Fact]
    public void A_wireguard_private_key_round_trips()
    {
        using var generated = X25519KeyPair.Generate();
        using var imported = X25519KeyPair.FromPrivateKey(generated.ExportPrivateKey());
        Assert.Equal(generated.PublicKey, imported.PublicKey);
    }
}
