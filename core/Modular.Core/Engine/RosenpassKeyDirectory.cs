using Google.Protobuf;
using Grpc.Core;
using Modular.Abstractions.Security;
using Modular.Control.Management;
using Modular.Control.Rosenpass;

namespace Modular.Core.Engine;

/// <summary>
/// The host's <see cref="IRosenpassKeyDirectory"/>: publishes through the latest management login and fetches a peer's
/// key once, checked against its fingerprint, then from the cache (<c>state_dir/rosenpass-keys/&lt;fingerprint&gt;.pub</c>,
/// mode 0600 in a 0700 folder). A cached file that no longer matches its name is deleted and fetched again.
/// </summary>
/// <remarks>Thread-safe: fetches of one fingerprint share one call; the cache is written whole (temp file, then rename).</remarks>
internal sealed class RosenpassKeyDirectory : IRosenpassKeyDirectory, IDisposable
{
    private readonly Func<ManagementClient?> _client;
    private readonly Action<RosenpassConfig> _announce;
    private readonly string _cacheDirectory;
    private readonly SemaphoreSlim _fetch = new(1, 1);

    /// <param name="client">The management client of the latest login (null before one).</param>
    /// <param name="announce">Makes the published fingerprint and address part of this agent's metadata.</param>
    public RosenpassKeyDirectory(Func<ManagementClient?> client, Action<RosenpassConfig> announce, string stateDirectory)
    {
        _client = client;
        _announce = announce;
        _cacheDirectory = Path.Combine(stateDirectory, "rosenpass-keys");
    }

    public void Dispose() => _fetch.Dispose();

    public async ValueTask PublishAsync(ReadOnlyMemory<byte> publicKey, ReadOnlyMemory<byte> fingerprint, string address, CancellationToken cancellationToken)
    {
        if (!RosenpassKeys.Matches(publicKey.Span, fingerprint.Span))
        {
            throw new ArgumentException("the fingerprint is not the BLAKE2s-256 of the public key", nameof(fingerprint));
        }

        var client = _client() ?? throw new InvalidOperationException("not logged in to management yet");
        try
        {
            await client.PublishRosenpassKeyAsync(publicKey, fingerprint, address, cancellationToken);
        }
        catch (RpcException e) when (e.StatusCode is StatusCode.InvalidArgument or StatusCode.AlreadyExists or StatusCode.ResourceExhausted)
        {
            throw new InvalidOperationException($"management refused the Rosenpass key: {e.Status.Detail}", e);
        }

        _announce(new RosenpassConfig { PubKeyFingerprint = ByteString.CopyFrom(fingerprint.Span), Addr = address });
    }

    public async ValueTask<byte[]?> GetAsync(ReadOnlyMemory<byte> fingerprint, CancellationToken cancellationToken)
    {
        if (fingerprint.Length != RosenpassKeys.FingerprintSize)
        {
            return null;
        }

        var path = Path.Combine(_cacheDirectory, Convert.ToHexStringLower(fingerprint.Span) + ".pub");
        await _fetch.WaitAsync(cancellationToken);
        try
        {
            if (File.Exists(path))
            {
                var cached = await File.ReadAllBytesAsync(path, cancellationToken);
                if (RosenpassKeys.Matches(cached, fingerprint.Span))
                {
                    return cached;
                }

                File.Delete(path); // damaged or replaced: never trusted, fetched again
            }

            var client = _client() ?? throw new InvalidOperationException("not logged in to management yet");
            var key = await client.GetRosenpassKeyAsync(fingerprint, cancellationToken);
            if (key is null || !RosenpassKeys.Matches(key, fingerprint.Span))
            {
                return null;
            }

            Store(path, key);
            return key;
        }
        finally
        {
            _fetch.Release();
        }
    }

    private void Store(string path, byte[] key)
    {
        Directory.CreateDirectory(_cacheDirectory);
        var temporary = path + ".tmp";
        File.WriteAllBytes(temporary, key);
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(_cacheDirectory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            File.SetUnixFileMode(temporary, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        }

        File.Move(temporary, path, overwrite: true);
    }
}
