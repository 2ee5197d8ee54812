using Proto = Modular.Plugins.Rosenpass.Protocol;

namespace Modular.Plugins.Rosenpass;

/// <summary>
/// The real Rosenpass protocol (<see cref="Proto.CryptoServer"/>) behind the provider's <see cref="IKeyExchange"/>.
/// The server is made on first use from this agent's static key pair, so a first start (McEliece key generation takes
/// seconds; the provider's publish loop runs it on a background thread) never holds up the provider's callers.
/// </summary>
/// <remarks>
/// Called under the provider's lock; <see cref="Proto.CryptoServer"/> has its own lock too, so this class keeps no
/// state of its own beyond the lazily made server.
/// </remarks>
internal sealed class CryptoServerExchange : IKeyExchange
{
    /// <summary>
    /// The longest sleep <see cref="Poll"/> hands out. The provider's timer loop is not woken when a message completes an
    /// exchange (that schedules the next rekey and the key's expiry), so it must look again soon; a poll is cheap.
    /// </summary>
    internal static readonly TimeSpan MaxSleep = TimeSpan.FromSeconds(1);

    private readonly Lazy<StaticKeyPair> _identity;
    private readonly Lazy<Proto.CryptoServer> _server;

    /// <param name="identity">This agent's static McEliece-460896 pair (read from state_dir, or made once).</param>
    /// <param name="time">The protocol's clock (rekey, retransmission, expiry).</param>
    /// <param name="timings">Upstream's timers by default; tests shorten them with <see cref="Proto.CryptoServerTimings.ScaledBy"/>.</param>
    public CryptoServerExchange(Lazy<StaticKeyPair> identity, TimeProvider time, Proto.CryptoServerTimings? timings = null)
    {
        _identity = identity;
        _server = new Lazy<Proto.CryptoServer>(() => new Proto.CryptoServer(identity.Value.SecretKey, identity.Value.PublicKey, time, timings));
    }

    public int AddPeer(byte[] peerPublicKey, byte[]? presharedKey) => _server.Value.AddPeer(peerPublicKey, presharedKey);

    public void RemovePeer(int peer)
    {
        // No server yet means no peer was ever added to it.
        if (_server.IsValueCreated)
        {
            _server.Value.RemovePeer(peer);
        }
    }

    public int InitiateHandshake(int peer, Span<byte> output) => _server.Value.InitiateHandshake(peer, output);

    public KeyExchangeResult HandleMessage(ReadOnlySpan<byte> input, Span<byte> output)
    {
        var result = _server.Value.HandleMessage(input, output);
        return new KeyExchangeResult(result.ExchangedWith, result.ResponseLength);
    }

    public byte[] OutputKey(int peer) => _server.Value.OutputKey(peer);

    public PollResult Poll()
    {
        // Until the key pair exists (generated on the publish loop's thread) there is nothing to do: no peer can be added.
        if (!_server.IsValueCreated && !_identity.IsValueCreated)
        {
            return PollResult.Sleep(MaxSleep);
        }

        var p = _server.Value.Poll();
        return p.Action == Proto.PollAction.Sleep
            ? PollResult.Sleep(p.Wait < MaxSleep ? p.Wait : MaxSleep)
            : new PollResult((PollAction)(int)p.Action, p.Peer, TimeSpan.Zero);
    }

    public int RetransmitHandshake(int peer, Span<byte> output) => _server.Value.RetransmitHandshake(peer, output);
}
