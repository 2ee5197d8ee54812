using System.Buffers;
using System.Text;

namespace Modular.WireGuard.Uapi;

/// <summary>
/// Reads the UAPI protocol's newline-terminated lines from a stream, refusing a line longer than
/// <see cref="MaxLineBytes"/>: StreamReader.ReadLineAsync buffers a line without bound, so a client that never
/// sends a newline could grow the agent's memory until it dies. The longest real line (an IPv6 endpoint or
/// a 64-hex-digit key with its name) is well under 200 bytes.
/// </summary>
internal sealed class UapiLineReader : IDisposable
{
    /// <summary>The longest line accepted, without its newline.</summary>
    public const int MaxLineBytes = 4096;

    private readonly Stream _stream;
    private readonly byte[] _buffer = ArrayPool<byte>.Shared.Rent(MaxLineBytes + 1);

    // Bytes [_start, _end) of _buffer are read from the stream but not yet returned as a line.
    private int _start;
    private int _end;

    public UapiLineReader(Stream stream) => _stream = stream;

    /// <summary>The next line without its '\n' (a trailing '\r' is kept, as StreamReader would not); null at end of stream.</summary>
    /// <exception cref="InvalidDataException">The line is longer than <see cref="MaxLineBytes"/>.</exception>
    public async ValueTask<string?> ReadLineAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            var newline = Array.IndexOf(_buffer, (byte)'\n', _start, _end - _start);
            if (newline >= 0)
            {
                var line = Encoding.UTF8.GetString(_buffer, _start, newline - _start);
                _start = newline + 1;
                return line;
            }

            if (_end - _start > MaxLineBytes)
            {
                throw new InvalidDataException($"a UAPI line longer than {MaxLineBytes} bytes");
            }

            if (_start > 0)
            {
                // Move the partial line to the front so the whole bound is available for it.
                Buffer.BlockCopy(_buffer, _start, _buffer, 0, _end - _start);
                _end -= _start;
                _start = 0;
            }

            var read = await _stream.ReadAsync(_buffer.AsMemory(_end, Math.Min(_buffer.Length, MaxLineBytes + 1) - _end), cancellationToken);
            if (read == 0)
            {
                // End of stream: a last line without its newline counts, as StreamReader has it.
                if (_end == _start)
                {
                    return null;
                }

                var tail = Encoding.UTF8.GetString(_buffer, _start, _end - _start);
                _start = _end;
                return tail;
            }

            _end += read;
        }
    }

    public void Dispose() => ArrayPool<byte>.Shared.Return(_buffer);
}
