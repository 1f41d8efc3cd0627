/* placeholder: rewritten for the SQLite store */
int main(void)
{
    return 0;
}
