namespace Modular.Abstractions.Security;

/// <summary>
/// Rosenpass public keys by fingerprint, through the management server. A Rosenpass public key (Classic
/// McEliece-460896: 524,160 bytes) is never inlined in the network map: the map carries its fingerprint
/// (BLAKE2s-256 of the key) and the key is fetched once, checked against the fingerprint, and cached in
/// the agent's state directory.
/// </summary>
/// <remarks>
/// Threading: thread-safe; calls may run concurrently (a fetch of a key already being fetched waits for that one).
/// Close: the host ends the directory when the engine stops, after it disposed the provider using it; a call after
/// that throws <see cref="ObjectDisposedException"/>. Cancelling a call throws <see cref="OperationCanceledException"/>.
/// Keys here are public; the plugin keeps its secret key to itself.
/// </remarks>
public interface IRosenpassKeyDirectory
{
    /// <summary>
    /// Publishes this agent's own Rosenpass public key (sealed as this peer, as every management call is); the server
    /// checks that it matches <paramref name="fingerprint"/> and stores it once per fingerprint. Also makes the
    /// agent announce <paramref name="fingerprint"/> and <paramref name="address"/> (<c>ip:port</c>) to its peers.
    /// </summary>
    /// <exception cref="InvalidOperationException">The server refused the key (e.g. the fingerprint does not match).</exception>
    ValueTask PublishAsync(ReadOnlyMemory<byte> publicKey, ReadOnlyMemory<byte> fingerprint, string address, CancellationToken cancellationToken);

    /// <summary>
    /// The public key whose fingerprint is <paramref name="fingerprint"/>: from the cache in the state directory, else
    /// from the server (then cached). The key is checked against the fingerprint before it is returned or cached;
    /// null when no key has this fingerprint (or the server's answer does not match it).
    /// </summary>
    ValueTask<byte[]?> GetAsync(ReadOnlyMemory<byte> fingerprint, CancellationToken cancellationToken);
}
